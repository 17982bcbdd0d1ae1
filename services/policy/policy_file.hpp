#pragma once
// Reading the policy file: YAML -> PolicyConfig, key files hashed, JWKS
// files inlined, every check the hops run at compile time. Used by the
// service on each (re)load and by `postern-policy validate`.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/policy/catalog.hpp"

namespace postern::policy_service {

struct Loaded {
  /// Set when the file is good.
  std::shared_ptr<const policy::Catalog> catalog;
  /// "FILE:LINE:COL: field.path: message", one per problem.
  std::vector<std::string> errors;
};

/// Loads and checks `path`. The snapshot gets `version` and `source`, and a
/// digest of its content.
Loaded load_policy_file(const std::string& path, std::uint64_t version, const std::string& source);

/// SHA-256 (hex) of the config's deterministic serialization.
std::string config_digest(const policy::v1::PolicyConfig& config);

}  // namespace postern::policy_service
