#pragma once
// Every check the policy service runs on its config before it starts;
// --check-config runs the same.

namespace postern::config {
class Checks;
namespace v1 {
class PolicyServiceConfig;
}
}  // namespace postern::config

namespace postern::policy_service {

/// With `policy_file`, the policy file is loaded and checked too (each of
/// its problems is an issue on policy_file, naming its own file and line).
void check_config(const config::v1::PolicyServiceConfig& cfg, config::Checks& c, bool policy_file = true);

}  // namespace postern::policy_service
