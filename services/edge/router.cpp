#include "edge/router.hpp"

#include <algorithm>
#include <stdexcept>

#include "common/config/yaml_proto.hpp"

namespace postern::edge {

namespace {

std::string strip_trailing_slashes(std::string s) {
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}

}  // namespace

Router::Router(const google::protobuf::RepeatedPtrField<config::v1::Api>& apis, std::string default_alias)
    : default_alias_(std::move(default_alias)) {
  for (int i = 0; i < apis.size(); ++i) {
    const auto& api = apis[i];
    const std::string where = "apis[" + std::to_string(i) + "]";
    if (api.name().empty()) throw std::invalid_argument(where + ".name: required");
    Entry e;
    e.name = api.name();
    e.base_path = api.base_path().empty() ? "/gateway/" + api.name() + "/" + (api.version().empty() ? "1.0" : api.version())
                                          : api.base_path();
    if (e.base_path.front() != '/') throw std::invalid_argument(where + ".base_path: must start with '/'");
    e.base_path = strip_trailing_slashes(e.base_path);
    const std::string& r = api.routing();
    if (r.starts_with("apigateway://")) {
      e.kind = Route::Kind::reverse_invoke;
      std::string rest = r.substr(13);
      auto slash = rest.find('/');
      e.alias = rest.substr(0, slash);
      e.prefix = slash == std::string::npos ? "" : strip_trailing_slashes(rest.substr(slash));
      if (e.prefix == "/") e.prefix.clear();
      if (e.alias.empty()) throw std::invalid_argument(where + ".routing: '" + r + "' names no alias");
    } else if (r.starts_with("http://") || r.starts_with("https://")) {
      e.kind = Route::Kind::direct;
      e.direct = direct_.size();
      direct_.push_back({r, api.ca_file()});
    } else {
      throw std::invalid_argument(where + ".routing: '" + r +
                                  "' must be apigateway://{alias}/{path} or http(s)://host[:port]/path");
    }
    e.timeout_ms = static_cast<std::uint32_t>(config::duration_or(api.timeout(), std::chrono::milliseconds(0)).count());
    for (const auto& other : entries_) {
      if (other.base_path == e.base_path) {
        throw std::invalid_argument(where + ".base_path: '" + e.base_path + "' is already used by API '" +
                                    other.name + "'");
      }
    }
    entries_.push_back(std::move(e));
  }
  std::stable_sort(entries_.begin(), entries_.end(),
                   [](const Entry& a, const Entry& b) { return a.base_path.size() > b.base_path.size(); });
}

std::optional<Route> Router::route(std::string_view target) const {
  const auto q = target.find('?');
  const std::string_view path = target.substr(0, q);
  const std::string_view query = q == std::string_view::npos ? std::string_view{} : target.substr(q);
  for (const auto& e : entries_) {
    const bool root = e.base_path == "/";
    if (!root) {
      if (!path.starts_with(e.base_path)) continue;
      if (path.size() > e.base_path.size() && path[e.base_path.size()] != '/') continue;
    }
    std::string_view rest = root ? path : path.substr(e.base_path.size());
    Route r;
    r.kind = e.kind;
    r.api = e.name;
    r.alias = e.alias;
    r.direct = e.direct;
    r.timeout_ms = e.timeout_ms;
    r.target = e.prefix;
    r.target += rest;
    if (r.target.empty()) r.target = "/";
    r.target += query;
    return r;
  }
  if (!default_alias_.empty()) {
    Route r;
    r.alias = default_alias_;
    r.target = std::string(target);
    return r;
  }
  return std::nullopt;
}

}  // namespace postern::edge
