#include "connector/config_check.hpp"

#include <chrono>
#include <string>

#include "common/config/checks.hpp"
#include "common/config/yaml_proto.hpp"
#include "common/net/http_client.hpp"
#include "common/net/tls.hpp"
#include "common/policy/signed_snapshot.hpp"
#include "postern/config/v1/config.pb.h"

namespace postern::connector {

void check_config(const config::v1::ConnectorConfig& cfg, config::Checks& c) {
  config::check_tracing(c, "tracing", cfg.tracing());
  using namespace std::chrono_literals;
  config::check_listen(c, "admin.listen", cfg.admin().listen(), false);
  c.require(cfg.brokers_size() > 0, "brokers", "at least one broker address (host:port) is required");
  for (int i = 0; i < cfg.brokers_size(); ++i) {
    config::check_host_port(c, "brokers[" + std::to_string(i) + "]", cfg.brokers(i));
  }
  const auto& t = cfg.tls();
  if (t.ca_file().empty() || t.cert_file().empty() || t.key_file().empty()) {
    c.add("tls", "ca_file, cert_file and key_file are required (the broker demands mutual TLS)");
  }
  config::check_client_tls(c, "tls", t);
  c.require(cfg.aliases_size() > 0, "aliases", "at least one alias -> native service is required");
  for (const auto& entry : cfg.aliases()) {
    const auto& svc = entry.second;  // not a structured binding: lambdas below capture it
    const std::string f = "aliases[" + entry.first + "]";
    c.run(f + ".url", [&] { net::Origin::parse(svc.url()); });
    if (!svc.ca_file().empty()) c.run(f + ".ca_file", [&] { net::make_client_tls(svc.ca_file(), f + ".ca_file"); });
  }
  const auto connect_timeout = config::duration_or(cfg.connect_timeout(), 100ms);  // unset: the default
  c.require(connect_timeout >= 100ms, "connect_timeout",
            std::to_string(connect_timeout.count()) + "ms is too short for a TLS connect (at least 100ms)");
  c.require(cfg.expected_brokers() <= 64, "expected_brokers",
            std::to_string(cfg.expected_brokers()) + " is more than 64 (a link is held to each)");
  if (!cfg.policy().address().empty()) config::check_host_port(c, "policy.address", cfg.policy().address());
  if (cfg.policy().has_tls()) config::check_client_tls(c, "policy.tls", cfg.policy().tls());
  if (!cfg.policy().address().empty()) {
    c.run("trusted_config_keys", [&] {
      policy::SnapshotKeys::load({cfg.trusted_config_keys().begin(), cfg.trusted_config_keys().end()},
                                 "trusted_config_keys");
    });
  }
}

}  // namespace postern::connector
