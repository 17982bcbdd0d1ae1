#pragma once
// The whole reverse-invoke path on 127.0.0.1, from real binaries: a demo
// native service, a broker, connectors and an edge, each with a YAML config
// written into a temp dir. Ports are picked by the services (port 0) and read
// from their "listening" log lines.

#include <memory>
#include <string>
#include <vector>

#include "support/certs.hpp"
#include "support/files.hpp"
#include "support/process.hpp"

namespace postern::testing {

struct ConnectorOptions {
  std::string id = "connector-1";
  /// Client certificate; default: the dev connector identity.
  std::string cert, key;
  /// alias -> native URL; default: {"demo": the demo service}.
  std::vector<std::pair<std::string, std::string>> aliases;
  std::string extra_yaml;  ///< appended to the config
  /// Broker addresses (host:port); default: the broker's registration port.
  std::vector<std::string> brokers;
};

class System {
 public:
  System();
  ~System();

  const Certs& certs() const { return *certs_; }
  /// Copies the test PKI into this system's directory and uses the copies
  /// from now on (call before starting anything): for tests that replace
  /// certificate or key files.
  const Certs& use_private_certs();
  /// Set before starting services: the public key files every hop trusts
  /// (trusted_config_keys); empty: the dev policy-signing key.
  std::vector<std::string> trusted_key_files;
  TempDir& dir() { return dir_; }

  /// Starts the demo native service (plain HTTP, or HTTPS with tls).
  Process& start_demo(bool tls = false);
  /// The default policy file: APIs demo, slow (timeout 1s), ghost and other,
  /// reverse invoke through the alias of the same name, no policies.
  static std::string default_policy_yaml();
  /// Starts the policy service on `policy_yaml` (default_policy_yaml() if
  /// empty). start_broker starts it with the default when not running.
  Process& start_policy(const std::string& policy_yaml = "");
  /// Replaces the policy file atomically (rename), as a ConfigMap update does.
  void write_policy(const std::string& policy_yaml);
  std::string policy_file() { return dir_.file("policy.yaml"); }
  /// Set before start_policy: the service reads this path instead of
  /// policy_file() (e.g. a ConfigMap-style symlink tree the test manages).
  std::string policy_path_override;
  /// Starts (or, after stop, restarts on the same ports) the broker.
  Process& start_broker(const std::string& extra_yaml = "");
  /// Starts a connector and waits until it is attached (unless wait=false).
  Process& start_connector(ConnectorOptions opts = {}, bool wait_attached = true);
  /// Starts the edge and waits until it is ready (it has the broker's
  /// snapshot). `apis_yaml` replaces the default (DMZ-local) API list.
  Process& start_edge(const std::string& extra_yaml = "", const std::string& apis_yaml = "");
  /// demo + broker + one connector + edge.
  void start_all();

  std::string edge_url(const std::string& path) const;
  std::string demo_url(const std::string& path) const;

  std::unique_ptr<Process> demo, policy, broker, edge;
  std::vector<std::unique_ptr<Process>> connectors;
  std::uint16_t policy_port = 0, policy_admin_port = 0;
  std::uint16_t demo_port = 0, registration_port = 0, relay_port = 0, broker_admin_port = 0, edge_port = 0,
                edge_admin_port = 0;
  bool demo_tls = false;
  /// Set before start_policy: the policy port speaks TLS and demands the
  /// connector's client certificate.
  bool policy_tls = false;
  /// start_edge waits until the edge reports ready.
  bool edge_wait_ready = true;
  /// Set before start_edge: the external listener is TLS (the dev edge certificate).
  bool edge_tls = false;
  /// Set before start_broker/start_edge: TLS between edge and broker relay port.
  bool relay_tls = false;
  /// Set before start_broker/start_edge: mutual TLS there (the edge presents
  /// the dev edge-client certificate; the broker admits only its identity).
  bool relay_mtls = false;
  /// Set before start_broker: the second connector identity (alias
  /// "other") may relay policy snapshots too (the first one always may).
  bool other_may_publish = false;
  /// Set before start_policy: the key snapshots are signed with (default:
  /// the dev policy-signing key every hop trusts).
  std::string signing_key;
  /// Set before start_edge: the edge's brokers (host:port each, as
  /// broker.addresses); empty: broker.address, this System's broker.
  std::vector<std::string> edge_brokers;

 private:
  std::string trusted_keys_yaml() const;
  TempDir dir_;
  const Certs* certs_;
  Certs own_certs_;
  int broker_starts_ = 0;
};

}  // namespace postern::testing
