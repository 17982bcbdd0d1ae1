#pragma once
// Maps a request target to an API and where it goes. Pure logic.
//
// APIs come from the policy snapshot (the single source of truth, reverse
// invoke or DMZ-local); the edge's own config may add DMZ-local APIs as a
// fallback for paths the snapshot does not cover; last, the default alias.

#include <optional>
#include <string>
#include <string_view>

#include "common/policy/catalog.hpp"
#include "postern/config/v1/config.pb.h"

namespace postern::edge {

struct Route {
  enum class Kind { reverse_invoke, direct };
  Kind kind = Kind::reverse_invoke;
  /// API name ("" for the default alias).
  std::string api;
  /// Reverse invoke: the registration alias.
  std::string alias;
  /// Direct: the upstream URL and its CA bundle.
  std::string url;
  std::string ca_file;
  /// Origin-form target to send on (path + query).
  std::string target;
  /// Time allowed for the response head; 0 = the edge default.
  std::uint32_t timeout_ms = 0;
  /// The snapshot's API (its policies apply), or nullptr.
  const policy::CompiledApi* policy_api = nullptr;
  /// The API matched, from the snapshot or the edge's own (nullptr for the
  /// default alias): its base path and response rewriting.
  const policy::CompiledApi* matched = nullptr;
};

class Router {
 public:
  /// The edge's static APIs: DMZ-local (http(s)://) only. Throws
  /// std::invalid_argument naming "apis[i].field" for a bad entry.
  Router(const google::protobuf::RepeatedPtrField<config::v1::Api>& apis, std::string default_alias);

  /// Longest base-path match in the snapshot, else in the static APIs, else
  /// the default alias, else nothing (404).
  std::optional<Route> route(const policy::Catalog* snapshot, std::string_view target) const;

 private:
  std::shared_ptr<const policy::Catalog> local_;
  std::string default_alias_;
};

}  // namespace postern::edge
