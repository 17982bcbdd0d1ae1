#include "edge/router.hpp"

#include <stdexcept>

namespace postern::edge {

namespace pv1 = policy::v1;

Router::Router(const google::protobuf::RepeatedPtrField<config::v1::Api>& apis, std::string default_alias)
    : default_alias_(std::move(default_alias)) {
  pv1::Snapshot snap;
  for (int i = 0; i < apis.size(); ++i) {
    const auto& a = apis[i];
    if (a.routing().starts_with("apigateway://")) {
      throw std::invalid_argument("apis[" + std::to_string(i) + "].routing: '" + a.routing() +
                                  "': reverse-invoke APIs are defined in the policy file (they reach every edge "
                                  "through the broker); the edge's own list holds DMZ-local http(s):// APIs only");
    }
    auto* p = snap.mutable_config()->add_apis();
    p->set_name(a.name());
    p->set_version(a.version());
    p->set_base_path(a.base_path());
    p->set_routing(a.routing());
    p->set_ca_file(a.ca_file());
    if (a.has_timeout()) *p->mutable_timeout() = a.timeout();
  }
  std::vector<policy::Issue> issues;
  local_ = policy::Catalog::compile(std::move(snap), issues);
  if (!local_) throw std::invalid_argument(issues.front().path + ": " + issues.front().message);
}

std::optional<Route> Router::route(const policy::Catalog* snapshot, std::string_view target) const {
  for (const policy::Catalog* cat : {snapshot, local_.get()}) {
    if (!cat) continue;
    auto m = cat->route(target);
    if (!m) continue;
    Route r;
    r.kind = m->api->reverse_invoke ? Route::Kind::reverse_invoke : Route::Kind::direct;
    r.api = m->api->name;
    r.alias = m->api->alias;
    r.url = m->api->url;
    r.ca_file = m->api->def->ca_file();
    r.target = std::move(m->target);
    r.timeout_ms = m->api->timeout_ms;
    if (cat == snapshot) r.policy_api = m->api;
    r.matched = m->api;
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
