#include "edge/config_check.hpp"

#include <string>
#include <vector>

#include "common/config/checks.hpp"
#include "common/policy/ip_ranges.hpp"
#include "common/policy/signed_snapshot.hpp"
#include "edge/router.hpp"
#include "postern/config/v1/config.pb.h"

namespace postern::edge {

void check_config(const config::v1::EdgeConfig& cfg, config::Checks& c) {
  config::check_tracing(c, "tracing", cfg.tracing());
  config::check_listen(c, "admin.listen", cfg.admin().listen(), false);
  c.require(cfg.listeners_size() > 0, "listeners", "at least one external listener is required");
  for (int i = 0; i < cfg.listeners_size(); ++i) {
    const auto& l = cfg.listeners(i);
    const std::string f = "listeners[" + std::to_string(i) + "]";
    config::check_listen(c, f + ".listen", l.listen(), true);
    if (l.has_tls()) config::check_server_tls(c, f + ".tls", l.tls(), false);
  }
  const auto& b = cfg.broker();
  c.require(!b.address().empty() || b.addresses_size() > 0, "broker.address",
            "required (host:port of the brokers' relay port), or broker.addresses");
  if (!b.address().empty()) config::check_host_port(c, "broker.address", b.address());
  for (int i = 0; i < b.addresses_size(); ++i) {
    config::check_host_port(c, "broker.addresses[" + std::to_string(i) + "]", b.addresses(i));
  }
  if (b.has_tls()) config::check_client_tls(c, "broker.tls", b.tls());
  c.run("apis", [&] { Router(cfg.apis(), cfg.default_alias()); });
  c.run("trusted_config_keys", [&] {
    policy::SnapshotKeys::load({cfg.trusted_config_keys().begin(), cfg.trusted_config_keys().end()},
                               "trusted_config_keys");
  });
  for (int i = 0; i < cfg.trusted_proxies_size(); ++i) {
    policy::IpRanges ranges;
    if (std::string why = ranges.add(cfg.trusted_proxies(i)); !why.empty()) {
      c.add("trusted_proxies[" + std::to_string(i) + "]", why);
    }
  }
}

}  // namespace postern::edge
