#pragma once
// Maps a request target to an API and where it goes. Pure logic.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "postern/config/v1/config.pb.h"

namespace postern::edge {

struct Route {
  enum class Kind { reverse_invoke, direct };
  Kind kind = Kind::reverse_invoke;
  /// API name ("" for the default alias).
  std::string api;
  /// Reverse invoke: the registration alias.
  std::string alias;
  /// Direct: index into Router::direct_urls().
  std::size_t direct = 0;
  /// Origin-form target to send on (path + query).
  std::string target;
  /// Time allowed for the response head; 0 = the edge default.
  std::uint32_t timeout_ms = 0;
};

class Router {
 public:
  /// Builds the table. Throws std::invalid_argument naming "apis[i].field"
  /// for a bad routing URL or a duplicate base path.
  Router(const google::protobuf::RepeatedPtrField<config::v1::Api>& apis, std::string default_alias);

  /// Longest base-path match on whole path segments; else the default
  /// alias; else nothing (404).
  std::optional<Route> route(std::string_view target) const;

  struct DirectUpstream {
    std::string url;
    std::string ca_file;
  };
  const std::vector<DirectUpstream>& direct_upstreams() const { return direct_; }

 private:
  struct Entry {
    std::string base_path;
    std::string name;
    Route::Kind kind;
    std::string alias;
    std::string prefix;  // path prefix on the far side
    std::size_t direct = 0;
    std::uint32_t timeout_ms = 0;
  };
  std::vector<Entry> entries_;  // longest base path first
  std::vector<DirectUpstream> direct_;
  std::string default_alias_;
};

}  // namespace postern::edge
