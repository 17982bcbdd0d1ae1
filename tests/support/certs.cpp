#include "support/certs.hpp"

#include "support/files.hpp"
#include "support/process.hpp"

#include <filesystem>
#include <stdexcept>

namespace postern::testing {
namespace {

Certs make_certs(const TempDir& dir) {
  const std::string script = source_path("deploy/certs/make-dev-certs.sh");
  const CommandResult run = run_command({"bash", script, dir.path()}, std::chrono::seconds(120));
  if (run.exit_code != 0) {
    throw std::runtime_error("bash " + script + " " + dir.path() + " failed with status " +
                             std::to_string(run.exit_code) + (run.timed_out ? " (timed out)" : "") +
                             "\n--- stdout ---\n" + run.out + "\n--- stderr ---\n" + run.err);
  }
  Certs certs;
  certs.dir = dir.path();
  const std::pair<std::string*, const char*> files[] = {
      {&certs.ca, "ca.crt"},
      {&certs.broker_crt, "broker.crt"},
      {&certs.broker_key, "broker.key"},
      {&certs.edge_crt, "edge.crt"},
      {&certs.edge_key, "edge.key"},
      {&certs.connector_crt, "connector.crt"},
      {&certs.connector_key, "connector.key"},
      {&certs.connector_other_crt, "connector-other.crt"},
      {&certs.connector_other_key, "connector-other.key"},
      {&certs.native_crt, "native.crt"},
      {&certs.native_key, "native.key"},
      {&certs.rogue_ca, "rogue-ca.crt"},
      {&certs.rogue_connector_crt, "rogue-connector.crt"},
      {&certs.rogue_connector_key, "rogue-connector.key"},
      {&certs.edge_client_crt, "edge-client.crt"},
      {&certs.edge_client_key, "edge-client.key"},
      {&certs.signing_key, "policy-signing.key"},
      {&certs.signing_pub, "policy-signing.pub"},
      {&certs.rogue_signing_key, "rogue-signing.key"},
      {&certs.rogue_signing_pub, "rogue-signing.pub"},
  };
  std::string missing;
  for (const auto& [field, name] : files) {
    *field = dir.file(name);
    std::error_code ec;
    if (!std::filesystem::is_regular_file(*field, ec)) missing += std::string(" ") + name;
  }
  if (!missing.empty()) {
    throw std::runtime_error(script + " did not write:" + missing + "\n--- stdout ---\n" + run.out +
                             "\n--- stderr ---\n" + run.err);
  }
  return certs;
}

}  // namespace

const Certs& test_certs() {
  // A static whose initialiser throws stays uninitialised, so the next caller
  // retries; the dir lives (and is removed) with the test process.
  struct State {
    TempDir dir{"postern-certs"};
    Certs certs = make_certs(dir);
  };
  static const State state;
  return state.certs;
}

}  // namespace postern::testing
