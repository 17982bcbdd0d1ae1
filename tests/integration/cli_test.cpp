// The binaries' command lines as a user meets them: --help says what each
// is, its options, subcommands and exit codes; --version; bad usage is exit
// 2 on stderr; subcommand --help is help, not an error; --check-config runs
// every check startup runs and reports every problem at once, with file,
// line and field, and startup reports them the same way.
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "support/certs.hpp"
#include "support/files.hpp"
#include "support/process.hpp"

namespace postern::testing {
namespace {

const std::vector<std::string> kServices = {"edge", "broker", "connector", "policy"};

TEST(Cli, HelpSaysWhatEachBinaryIsItsOptionsAndExitCodes) {
  for (const auto& s : kServices) {
    const std::string name = "postern-" + s;
    for (const char* flag : {"--help", "-h"}) {
      const auto r = run_command({binary_path(name), flag});
      EXPECT_EQ(r.exit_code, 0) << name << " " << flag << "\n" << r.err;
      EXPECT_NE(r.out.find(name + " "), std::string::npos) << r.out;
      for (const char* option : {"--config FILE", "--log-level LEVEL", "--check-config", "--version"}) {
        EXPECT_NE(r.out.find(option), std::string::npos) << name << " lacks " << option << "\n" << r.out;
      }
      EXPECT_NE(r.out.find("exit codes:"), std::string::npos) << r.out;
      EXPECT_NE(r.out.find("  2  a bad command line"), std::string::npos) << r.out;
      // A sentence on what it is, not only a usage line.
      EXPECT_NE(r.out.find(s == "policy" ? "policy file" : "zone"), std::string::npos) << r.out;
    }
  }
  const auto policy = run_command({binary_path("postern-policy"), "--help"});
  EXPECT_NE(policy.out.find("validate FILE..."), std::string::npos) << policy.out;
  EXPECT_NE(policy.out.find("hash-password"), std::string::npos) << policy.out;
}

TEST(Cli, VersionIsPrintedAndExitsZero) {
  for (const auto& s : kServices) {
    const auto r = run_command({binary_path("postern-" + s), "--version"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out.rfind("postern-" + s + " ", 0), 0u) << r.out;
    EXPECT_NE(r.out.find_first_of("0123456789"), std::string::npos) << r.out;
  }
}

TEST(Cli, BadUsageIsExitTwoOnStderrPointingToHelp) {
  for (const auto& s : kServices) {
    const auto none = run_command({binary_path("postern-" + s)});
    EXPECT_EQ(none.exit_code, 2);
    EXPECT_NE(none.err.find("--config FILE is required"), std::string::npos) << none.err;
    EXPECT_NE(none.err.find("--help says more"), std::string::npos) << none.err;
    const auto unknown = run_command({binary_path("postern-" + s), "--bogus"});
    EXPECT_EQ(unknown.exit_code, 2);
    EXPECT_NE(unknown.err.find("unknown argument '--bogus'"), std::string::npos) << unknown.err;
  }
}

TEST(Cli, SubcommandHelpIsHelp) {
  const auto v = run_command({binary_path("postern-policy"), "validate", "--help"});
  EXPECT_EQ(v.exit_code, 0) << v.err;
  EXPECT_NE(v.out.find("usage: postern-policy validate FILE..."), std::string::npos) << v.out;
  const auto h = run_command({binary_path("postern-policy"), "hash-password", "--help"});
  EXPECT_EQ(h.exit_code, 0) << h.err;
  EXPECT_NE(h.out.find("usage: postern-policy hash-password"), std::string::npos) << h.out;
}

struct Checked {
  int exit_code;
  std::string err;
};

// --check-config on `yaml` written to DIR/NAME, and the service started on it.
Checked check(const TempDir& dir, const std::string& service, const std::string& name, const std::string& yaml,
              bool start = false) {
  const auto file = dir.file(name);
  write_file(file, yaml);
  std::vector<std::string> argv{binary_path("postern-" + service), "--config", file};
  if (!start) argv.push_back("--check-config");
  const auto r = run_command(argv, std::chrono::seconds(20));
  return {r.exit_code, r.err};
}

bool has(const Checked& c, const std::string& line) { return c.err.find("  " + line) != std::string::npos; }

TEST(Cli, CheckConfigRunsEveryStartupCheck) {
  TempDir dir("postern-check");
  const auto& certs = test_certs();
  // An empty file: each service names what it needs.
  const std::map<std::string, std::vector<std::string>> needs = {
      {"edge", {"listeners: at least one", "broker.address: required", "trusted_config_keys: "}},
      {"broker", {"registration.listen: required", "registration.tls: required", "relay.listen: required"}},
      {"connector", {"brokers: at least one", "tls: ca_file, cert_file and key_file are required", "aliases: at least"}},
      {"policy", {"listen.listen: required", "signing_key_file: required", "policy_file: required"}}};
  for (const auto& [service, lines] : needs) {
    const auto r = check(dir, service, service + "-empty.yaml", "");
    EXPECT_EQ(r.exit_code, 2) << service << ": " << r.err;
    for (const auto& l : lines) EXPECT_TRUE(has(r, dir.file(service + "-empty.yaml") + ": " + l)) << r.err;
  }
  // A broker with a registration port but no TLS.
  const std::string keys = "trusted_config_keys: [\"" + certs.signing_pub + "\"]\n";
  auto b = check(dir, "broker", "broker.yaml",
                 "id: b\nregistration: {listen: \"127.0.0.1:0\"}\nrelay: {listen: \"127.0.0.1:0\"}\n" + keys);
  EXPECT_EQ(b.exit_code, 2);
  EXPECT_TRUE(has(b, dir.file("broker.yaml") + ":2:1: registration.tls: required")) << b.err;
  // A connector whose certificate files do not exist and an alias that is
  // not HTTP: every problem in one run, each with its line.
  auto c = check(dir, "connector", "connector.yaml",
                 "id: c\nbrokers: [\"broker:7443\"]\n"
                 "tls: {ca_file: /nonexistent/ca.crt, cert_file: /nonexistent/c.crt, key_file: /nonexistent/c.key}\n"
                 "aliases:\n  x: {url: \"ftp://x\"}\n");
  EXPECT_EQ(c.exit_code, 2);
  const auto cf = dir.file("connector.yaml");
  EXPECT_TRUE(has(c, cf + ":3:7: tls.ca_file: cannot read")) << c.err;
  EXPECT_TRUE(has(c, cf + ":3:1: tls: cannot read TLS certificate '/nonexistent/c.crt'")) << c.err;
  EXPECT_TRUE(has(c, cf + ":5:7: aliases[x].url: URL 'ftp://x' must start with http://")) << c.err;
  // An edge: a broker address without a port, a port out of range, an
  // unknown field and two bad CIDRs: five problems, one pass.
  const std::string edge_yaml = "id: e\nlisteners: [{listen: \"127.0.0.1:99999\"}]\nbroker: {address: nohost}\n"
                                "bogus: 1\ntrusted_proxies: [10.0.0.1/8, nope]\n" + keys;
  const auto ef = dir.file("edge.yaml");
  for (const bool start : {false, true}) {
    auto e = check(dir, "edge", "edge.yaml", edge_yaml, start);
    EXPECT_EQ(e.exit_code, 2) << (start ? "started" : "checked");
    EXPECT_TRUE(has(e, ef + ":4:1: bogus: unknown field 'bogus'")) << e.err;
    EXPECT_TRUE(has(e, ef + ":2:14: listeners[0].listen: listen address '127.0.0.1:99999': bad port")) << e.err;
    EXPECT_TRUE(has(e, ef + ":3:10: broker.address: expected host:port, got 'nohost'")) << e.err;
    EXPECT_TRUE(has(e, ef + ":5:19: trusted_proxies[0]: '10.0.0.1/8': host bits set")) << e.err;
    EXPECT_TRUE(has(e, ef + ":5:31: trusted_proxies[1]: 'nope': not an IP address")) << e.err;
  }
  // YAML syntax in plain words, with its position.
  auto y = check(dir, "edge", "syntax.yaml", "id: e\nlisteners: [{listen: \"127.0.0.1:0\"}\n");
  EXPECT_EQ(y.exit_code, 2);
  EXPECT_TRUE(has(y, dir.file("syntax.yaml") + ":3:1: YAML syntax: a list opened with '[' is not closed with ']'"))
      << y.err;
  // And a good one passes.
  auto ok = check(dir, "edge", "good.yaml",
                  "id: e\nlisteners: [{listen: \"127.0.0.1:0\"}]\nbroker: {address: \"127.0.0.1:7444\"}\n" + keys);
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
}

}  // namespace
}  // namespace postern::testing
