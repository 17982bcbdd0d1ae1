#include "support/system.hpp"

#include <filesystem>
#include <stdexcept>

namespace postern::testing {

System::System() : dir_("postern-sys"), certs_(&test_certs()) {}

const Certs& System::use_private_certs() {
  namespace fs = std::filesystem;
  const std::string to = dir_.file("certs");
  fs::create_directories(to);
  for (const auto& e : fs::directory_iterator(test_certs().dir)) {
    fs::copy_file(e.path(), to + "/" + e.path().filename().string(), fs::copy_options::overwrite_existing);
  }
  own_certs_ = test_certs();
  auto moved = [&](std::string& path) {
    if (path.starts_with(test_certs().dir)) path = to + path.substr(test_certs().dir.size());
  };
  Certs& c = own_certs_;
  c.dir = to;
  for (std::string* p : {&c.ca, &c.broker_crt, &c.broker_key, &c.edge_crt, &c.edge_key, &c.connector_crt,
                         &c.connector_key, &c.connector_other_crt, &c.connector_other_key, &c.native_crt,
                         &c.native_key, &c.rogue_ca, &c.rogue_connector_crt, &c.rogue_connector_key,
                         &c.edge_client_crt, &c.edge_client_key, &c.signing_key, &c.signing_pub,
                         &c.rogue_signing_key, &c.rogue_signing_pub}) {
    moved(*p);
  }
  certs_ = &own_certs_;
  return own_certs_;
}

std::string System::trusted_keys_yaml() const {
  std::string y = "trusted_config_keys: [";
  if (trusted_key_files.empty()) {
    y += "\"" + certs_->signing_pub + "\"";
  } else {
    for (std::size_t i = 0; i < trusted_key_files.size(); ++i) y += (i ? ", \"" : "\"") + trusted_key_files[i] + "\"";
  }
  return y + "]\n";
}

System::~System() {
  // Edge first, native service last: the order a user would stop them in.
  edge.reset();
  connectors.clear();
  broker.reset();
  policy.reset();
  demo.reset();
}

Process& System::start_demo(bool tls) {
  demo_tls = tls;
  // Debug: the demo logs every request target it receives, so tests can
  // tell what reached the native service.
  std::vector<std::string> argv{binary_path("postern-demo"), "--listen", "127.0.0.1:0", "--log-level", "debug"};
  if (tls) {
    argv.insert(argv.end(), {"--tls-cert", certs_->native_crt, "--tls-key", certs_->native_key});
  }
  demo = Process::start(argv, dir_.file("demo.log"));
  demo_port = demo->wait_for_port("http");
  return *demo;
}

std::string System::default_policy_yaml() {
  return "apis:\n"
         "  - {name: demo, version: \"1.0\", routing: \"apigateway://demo/\"}\n"
         "  - {name: slow, version: \"1.0\", routing: \"apigateway://slow/\", timeout: 1s}\n"
         "  - {name: ghost, version: \"1.0\", routing: \"apigateway://ghost/\"}\n"
         "  - {name: other, version: \"1.0\", routing: \"apigateway://other/\"}\n";
}

void System::write_policy(const std::string& policy_yaml) {
  const std::string tmp = dir_.file("policy.yaml.tmp");
  write_file(tmp, policy_yaml);
  if (std::rename(tmp.c_str(), policy_file().c_str()) != 0) throw std::runtime_error("cannot replace policy.yaml");
}

Process& System::start_policy(const std::string& policy_yaml) {
  write_policy(policy_yaml.empty() ? default_policy_yaml() : policy_yaml);
  const std::string cfg = dir_.file("policy-service.yaml");
  std::string y;
  y += "id: policy-test\n";
  y += "log: {level: debug}\n";
  y += "admin: {listen: \"127.0.0.1:0\"}\n";
  y += "listen: {listen: \"127.0.0.1:0\"";
  if (policy_tls) {
    y += ", tls: {cert_file: \"" + certs_->broker_crt + "\", key_file: \"" + certs_->broker_key +
         "\", client_ca_file: \"" + certs_->ca + "\"}";
  }
  y += "}\n";
  y += "policy_file: \"" + (policy_path_override.empty() ? policy_file() : policy_path_override) + "\"\n";
  y += "reload_interval: 200ms\n";
  y += "signing_key_file: \"" + (signing_key.empty() ? certs_->signing_key : signing_key) + "\"\n";
  write_file(cfg, y);
  policy = Process::start({binary_path("postern-policy"), "--config", cfg}, dir_.file("policy.log"));
  policy_port = policy->wait_for_port("policy");
  policy_admin_port = policy->wait_for_port("admin");
  return *policy;
}

Process& System::start_broker(const std::string& extra_yaml) {
  if (!policy) start_policy();
  const bool restart = broker_starts_++ > 0;
  const std::string cfg = dir_.file("broker.yaml");
  std::string y;
  y += "id: broker-test\n";
  y += "log: {level: debug}\n";
  y += "admin: {listen: \"127.0.0.1:" + std::to_string(restart ? broker_admin_port : 0) + "\"}\n";
  y += "registration:\n  listen: \"127.0.0.1:" + std::to_string(restart ? registration_port : 0) + "\"\n";
  y += "  tls: {cert_file: \"" + certs_->broker_crt + "\", key_file: \"" + certs_->broker_key +
       "\", client_ca_file: \"" + certs_->ca + "\"}\n";
  y += "relay:\n  listen: \"127.0.0.1:" + std::to_string(restart ? relay_port : 0) + "\"\n";
  if (relay_tls || relay_mtls) {
    y += "  tls: {cert_file: \"" + certs_->broker_crt + "\", key_file: \"" + certs_->broker_key + "\"" +
         (relay_mtls ? ", client_ca_file: \"" + certs_->ca + "\"" : std::string()) + "}\n";
  }
  if (relay_mtls) y += "edge_identities: [\"spiffe://postern.dev/edge\"]\n";
  y += trusted_keys_yaml();
  y += "identities:\n";
  y += "  - {identity: \"spiffe://postern.dev/connector/green\", aliases: [demo, slow, other, broken], "
       "publish_config: true}\n";
  y += std::string("  - {identity: \"spiffe://postern.dev/connector/other\", aliases: [other]") +
       (other_may_publish ? ", publish_config: true}\n" : "}\n");
  y += "heartbeat_interval: 1s\nheartbeat_timeout: 3s\npark_wait: 2s\ndrain_timeout: 5s\n";
  y += extra_yaml;
  write_file(cfg, y);
  broker = Process::start({binary_path("postern-broker"), "--config", cfg}, dir_.file("broker.log"));
  registration_port = broker->wait_for_port("registration");
  relay_port = broker->wait_for_port("relay");
  broker_admin_port = broker->wait_for_port("admin");
  return *broker;
}

Process& System::start_connector(ConnectorOptions o, bool wait_attached) {
  const std::string cfg = dir_.file(o.id + ".yaml");
  std::string y;
  y += "id: " + o.id + "\n";
  y += "log: {level: debug}\n";
  if (o.brokers.empty()) o.brokers.push_back("localhost:" + std::to_string(registration_port));
  y += "brokers: [";
  for (std::size_t i = 0; i < o.brokers.size(); ++i) y += (i ? ", \"" : "\"") + o.brokers[i] + "\"";
  y += "]\n";
  y += "tls:\n";
  y += "  ca_file: \"" + certs_->ca + "\"\n";
  y += "  cert_file: \"" + (o.cert.empty() ? certs_->connector_crt : o.cert) + "\"\n";
  y += "  key_file: \"" + (o.key.empty() ? certs_->connector_key : o.key) + "\"\n";
  y += "lanes: 2\n";
  if (policy_port) {
    y += trusted_keys_yaml();
    y += "policy:\n  address: \"127.0.0.1:" + std::to_string(policy_port) + "\"\n";
    if (policy_tls) {
      y += "  tls: {ca_file: \"" + certs_->ca + "\", cert_file: \"" + certs_->connector_crt + "\", key_file: \"" +
           certs_->connector_key + "\", server_name: localhost}\n";
    }
  }
  y += "drain_timeout: 10s\n";
  y += "aliases:\n";
  if (o.aliases.empty()) {
    o.aliases.push_back({"demo", demo_url("")});
  }
  for (const auto& [alias, url] : o.aliases) {
    y += "  " + alias + ":\n    url: \"" + url + "\"\n";
    if (url.starts_with("https://") || url.starts_with("wss://")) y += "    ca_file: \"" + certs_->ca + "\"\n";
    if (alias == "slow") y += "    read_timeout: 1s\n";
  }
  y += o.extra_yaml;
  write_file(cfg, y);
  connectors.push_back(
      Process::start({binary_path("postern-connector"), "--config", cfg}, dir_.file(o.id + ".log")));
  auto& p = *connectors.back();
  if (wait_attached) p.wait_for_log("\"msg\":\"attached\"");
  return p;
}

Process& System::start_edge(const std::string& extra_yaml, const std::string& apis_yaml) {
  const std::string cfg = dir_.file("edge.yaml");
  std::string y;
  y += "id: edge-test\n";
  y += "log: {level: debug}\n";
  y += "admin: {listen: \"127.0.0.1:0\"}\n";
  if (edge_tls) {
    y += "listeners:\n  - {listen: \"127.0.0.1:0\", tls: {cert_file: \"" + certs_->edge_crt + "\", key_file: \"" +
         certs_->edge_key + "\"}}\n";
  } else {
    y += "listeners:\n  - {listen: \"127.0.0.1:0\"}\n";
  }
  y += "public_url: \"https://api.example.test\"\n";
  if (edge_brokers.empty()) {
    y += "broker:\n  address: \"127.0.0.1:" + std::to_string(relay_port) + "\"\n";
  } else {
    y += "broker:\n  addresses: [";
    for (std::size_t i = 0; i < edge_brokers.size(); ++i) y += (i ? ", \"" : "\"") + edge_brokers[i] + "\"";
    y += "]\n";
  }
  if (relay_tls) y += "  tls: {ca_file: \"" + certs_->ca + "\", server_name: localhost}\n";
  if (relay_mtls) {
    y += "  tls: {ca_file: \"" + certs_->ca + "\", server_name: localhost, cert_file: \"" + certs_->edge_client_crt +
         "\", key_file: \"" + certs_->edge_client_key + "\"}\n";
  }
  y += trusted_keys_yaml();
  if (apis_yaml.empty()) {
    if (demo_port) {
      y += "apis:\n";
      y += "  - {name: local, version: \"1.0\", routing: \"" + demo_url("") + "\"" +
           (demo_tls ? ", ca_file: \"" + certs_->ca + "\"" : std::string()) + "}\n";
    }
  } else {
    y += apis_yaml;
  }
  y += extra_yaml;
  write_file(cfg, y);
  edge = Process::start({binary_path("postern-edge"), "--config", cfg}, dir_.file("edge.log"));
  edge_admin_port = edge->wait_for_port("admin");
  edge->wait_for_log("\"msg\":\"listening\".*\"listener\":\"external");
  edge_port = edge->wait_for_port(edge->count_log("\"listener\":\"external-tls\"") ? "external-tls" : "external");
  if (!edge_wait_ready) return *edge;
  edge->wait_for_log("\"msg\":\"edge ready\"");
  // With a connector attached, the broker has the policy snapshot; wait
  // until it is in force so tests see the APIs.
  bool attached = false;
  for (auto& c : connectors) attached = attached || (c->running() && c->count_log("\"msg\":\"attached\"") > 0);
  if (attached) edge->wait_for_log("\"msg\":\"policy snapshot applied\"");
  return *edge;
}

void System::start_all() {
  start_demo();
  start_broker();
  start_connector();
  start_edge();
}

std::string System::edge_url(const std::string& path) const {
  return "http://127.0.0.1:" + std::to_string(edge_port) + path;
}

std::string System::demo_url(const std::string& path) const {
  return std::string(demo_tls ? "https://localhost:" : "http://127.0.0.1:") + std::to_string(demo_port) + path;
}

}  // namespace postern::testing
