#include "common/policy/cors.hpp"

#include <algorithm>
#include <chrono>

#include "common/config/yaml_proto.hpp"
#include "common/net/http_headers.hpp"
#include "postern/policy/v1/policy.pb.h"
#include "postern/tunnel/v1/tunnel.pb.h"

namespace postern::policy {
namespace {

using net::iequals;

bool any_origin(const v1::Cors& c) {
  return std::find(c.allowed_origins().begin(), c.allowed_origins().end(), "*") != c.allowed_origins().end();
}

bool origin_allowed(const v1::Cors& c, std::string_view origin) {
  if (origin.empty()) return false;
  if (any_origin(c)) return true;
  return std::any_of(c.allowed_origins().begin(), c.allowed_origins().end(),
                     [&](const std::string& o) { return iequals(o, origin); });
}

std::string join(const google::protobuf::RepeatedPtrField<std::string>& items) {
  std::string out;
  for (const auto& i : items) {
    if (!out.empty()) out += ", ";
    out += i;
  }
  return out;
}

// The allowance every answer to an allowed origin carries.
CorsHeaders origin_headers(const v1::Cors& c, std::string_view origin) {
  CorsHeaders h;
  // "*" only where no credentials go; otherwise the origin itself, and the
  // answer varies with it.
  if (any_origin(c) && !c.allow_credentials()) {
    h.emplace_back("Access-Control-Allow-Origin", "*");
  } else {
    h.emplace_back("Access-Control-Allow-Origin", std::string(origin));
    h.emplace_back("Vary", "Origin");
  }
  if (c.allow_credentials()) h.emplace_back("Access-Control-Allow-Credentials", "true");
  return h;
}

}  // namespace

bool is_preflight(std::string_view method, std::string_view origin, std::string_view request_method) {
  return method == "OPTIONS" && !origin.empty() && !request_method.empty();
}

PreflightAnswer preflight(const v1::Cors& c, std::string_view origin, std::string_view request_method,
                          std::string_view request_headers) {
  PreflightAnswer a;
  if (!origin_allowed(c, origin)) {
    a.status = 403;
    a.problem = "origin '" + std::string(origin) + "' is not allowed to call this API";
    return a;
  }
  static const google::protobuf::RepeatedPtrField<std::string> kDefaultMethods = [] {
    google::protobuf::RepeatedPtrField<std::string> m;
    for (const char* x : {"GET", "HEAD", "POST"}) *m.Add() = x;
    return m;
  }();
  const auto& methods = c.allowed_methods().empty() ? kDefaultMethods : c.allowed_methods();
  if (std::none_of(methods.begin(), methods.end(), [&](const std::string& m) { return iequals(m, request_method); })) {
    a.status = 403;
    a.problem = "method " + std::string(request_method) + " is not allowed cross-origin (allowed: " + join(methods) + ")";
    return a;
  }
  std::size_t pos = 0;
  while (pos < request_headers.size()) {
    auto comma = request_headers.find(',', pos);
    if (comma == std::string_view::npos) comma = request_headers.size();
    const auto name = net::trim_ows(request_headers.substr(pos, comma - pos));
    pos = comma + 1;
    if (name.empty()) continue;
    const bool allowed = std::any_of(c.allowed_headers().begin(), c.allowed_headers().end(),
                                     [&](const std::string& h) { return h == "*" || iequals(h, name); });
    if (!allowed) {
      a.status = 403;
      a.problem = "request header '" + std::string(name) + "' is not allowed cross-origin";
      return a;
    }
  }
  a.headers = origin_headers(c, origin);
  a.headers.emplace_back("Access-Control-Allow-Methods", join(methods));
  if (!net::trim_ows(request_headers).empty()) a.headers.emplace_back("Access-Control-Allow-Headers", std::string(net::trim_ows(request_headers)));
  const auto max_age = config::duration_or(c.max_age(), std::chrono::minutes(10));
  a.headers.emplace_back("Access-Control-Max-Age",
                         std::to_string(std::chrono::duration_cast<std::chrono::seconds>(max_age).count()));
  return a;
}

CorsHeaders response_headers(const v1::Cors& c, std::string_view origin) {
  if (!origin_allowed(c, origin)) return {};
  auto h = origin_headers(c, origin);
  if (!c.exposed_headers().empty()) h.emplace_back("Access-Control-Expose-Headers", join(c.exposed_headers()));
  return h;
}

void set_cors_headers(const CorsHeaders& headers, tunnel::v1::ResponseHead& head) {
  for (const auto& [name, value] : headers) {
    // The edge's allowance replaces whatever the native service said.
    // (Vary adds to the native service's.)
    auto* hs = head.mutable_headers();
    for (int i = hs->size() - 1; i >= 0 && !iequals(name, "vary"); --i) {
      if (iequals(hs->Get(i).name(), name)) hs->DeleteSubrange(i, 1);
    }
    auto* h = head.add_headers();
    h->set_name(name);
    h->set_value(value);
  }
}

}  // namespace postern::policy
