#include "broker/config_check.hpp"

#include <string>

#include "common/config/checks.hpp"
#include "common/policy/signed_snapshot.hpp"
#include "postern/config/v1/config.pb.h"

namespace postern::broker {

void check_config(const config::v1::BrokerConfig& cfg, config::Checks& c) {
  config::check_tracing(c, "tracing", cfg.tracing());
  config::check_listen(c, "admin.listen", cfg.admin().listen(), false);
  const auto& reg = cfg.registration();
  config::check_listen(c, "registration.listen", reg.listen(), true);
  if (!reg.has_tls()) {
    c.add("registration.tls",
          "required: cert_file, key_file and client_ca_file (connectors must present a client certificate)");
  } else {
    config::check_server_tls(c, "registration.tls", reg.tls(), true);
  }
  const auto& relay = cfg.relay();
  config::check_listen(c, "relay.listen", relay.listen(), true);
  if (relay.has_tls()) {
    config::check_server_tls(c, "relay.tls", relay.tls(), false);
    c.require(relay.tls().client_ca_file().empty() || cfg.edge_identities_size() > 0, "edge_identities",
              "required when relay.tls.client_ca_file is set (the identities edges present; a connector "
              "certificate from the same CA must not pass for an edge)");
  } else {
    c.require(cfg.edge_identities_size() == 0, "edge_identities",
              "needs relay.tls with client_ca_file (edges prove who they are with a client certificate)");
  }
  c.require(cfg.response_window() == 0 || cfg.response_window() >= kMinResponseWindow, "response_window",
            std::to_string(cfg.response_window()) + " bytes is too small (at least " +
                std::to_string(kMinResponseWindow) + ")");
  c.require(cfg.expected_brokers() <= 64, "expected_brokers",
            std::to_string(cfg.expected_brokers()) + " is more than 64 (each connector would hold that many links)");
  c.run("trusted_config_keys", [&] {
    policy::SnapshotKeys::load({cfg.trusted_config_keys().begin(), cfg.trusted_config_keys().end()},
                               "trusted_config_keys");
  });
}

}  // namespace postern::broker
