#include "policy/config_check.hpp"

#include "common/config/checks.hpp"
#include "common/crypto/keys.hpp"
#include "policy/policy_file.hpp"
#include "postern/config/v1/config.pb.h"

namespace postern::policy_service {

void check_config(const config::v1::PolicyServiceConfig& cfg, config::Checks& c, bool policy_file) {
  config::check_listen(c, "admin.listen", cfg.admin().listen(), false);
  config::check_listen(c, "listen.listen", cfg.listen().listen(), true);
  if (cfg.listen().has_tls()) config::check_server_tls(c, "listen.tls", cfg.listen().tls(), false);
  if (cfg.signing_key_file().empty()) {
    c.add("signing_key_file",
          "required: every snapshot is signed, and connectors, brokers and edges take only signed ones (make a key "
          "with `openssl genpkey -algorithm ed25519 -out signing.key`)");
  } else {
    c.run("signing_key_file", [&] { crypto::SigningKey::from_file(cfg.signing_key_file()); });
  }
  if (cfg.policy_file().empty()) {
    c.add("policy_file", "required (the YAML file with the APIs, applications and policies)");
  } else if (policy_file) {
    for (const auto& e : load_policy_file(cfg.policy_file(), 1, "check").errors) c.add("policy_file", e);
  }
}

}  // namespace postern::policy_service
