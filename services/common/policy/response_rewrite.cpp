#include "common/policy/response_rewrite.hpp"

#include <cctype>
#include <optional>

#include "common/net/http_headers.hpp"
#include "common/policy/catalog.hpp"
#include "postern/tunnel/v1/tunnel.pb.h"

namespace postern::policy {
namespace {

using net::iequals;

bool istarts_with(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

// A path-absolute reference (with its query) under the native base path,
// on the public base path instead; nullopt when it is not under it.
std::optional<std::string> map_path(const RewriteRules& r, std::string_view p) {
  const std::string_view base = r.native_base;
  if (!base.empty()) {
    if (!p.starts_with(base)) return std::nullopt;
    const std::string_view rest = p.substr(base.size());
    if (!rest.empty() && rest.front() != '/' && rest.front() != '?' && rest.front() != '#') return std::nullopt;
    p = rest;
  }
  if (p.empty() || p.front() != '/') return r.public_base + "/" + std::string(p);
  return r.public_base + std::string(p);
}

// "http(s)://host[:port]" of the native service at the start of `v`: the
// length of that part, or 0.
std::size_t native_origin_length(const RewriteRules& r, std::string_view v) {
  const std::string_view scheme = r.tls ? "https://" : "http://";
  if (!istarts_with(v, scheme)) return 0;
  const std::size_t start = scheme.size();
  std::size_t end = v.find_first_of("/?#", start);
  if (end == std::string_view::npos) end = v.size();
  std::string_view authority = v.substr(start, end - start);
  if (authority.find('@') != std::string_view::npos) return 0;
  std::string_view host = authority, port;
  if (!authority.empty() && authority.front() == '[') {
    const auto close = authority.find(']');
    if (close == std::string_view::npos) return 0;
    host = authority.substr(1, close - 1);
    if (close + 1 < authority.size() && authority[close + 1] == ':') port = authority.substr(close + 2);
  } else if (const auto colon = authority.rfind(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
  }
  if (port.empty()) port = r.tls ? "443" : "80";
  if (!iequals(host, r.host) || port != r.port) return 0;
  return end;
}

}  // namespace

RewriteRules RewriteRules::of(const CompiledApi& api, bool tls, std::string host, std::string port,
                              std::string_view origin_base, std::string_view prefix) {
  RewriteRules r;
  if (api.def) {
    const auto& rw = api.def->response_rewrite();
    r.off = rw.off();
    for (const auto& rule : rw.rules()) r.prefixes.emplace_back(rule.from(), rule.to());
  }
  r.public_base = api.base_path == "/" ? "" : api.base_path;
  while (!r.public_base.empty() && r.public_base.back() == '/') r.public_base.pop_back();
  r.tls = tls;
  r.host = std::move(host);
  r.port = std::move(port);
  r.native_base = std::string(origin_base) + std::string(prefix);
  while (!r.native_base.empty() && r.native_base.back() == '/') r.native_base.pop_back();
  return r;
}

std::string rewrite_location(const RewriteRules& r, std::string_view value) {
  if (r.off) return std::string(value);
  const std::string_view v = net::trim_ows(value);
  for (const auto& [from, to] : r.prefixes) {
    if (!from.empty() && v.starts_with(from)) return to + std::string(v.substr(from.size()));
  }
  if (const std::size_t n = native_origin_length(r, v)) {
    if (auto mapped = map_path(r, v.substr(n))) return *mapped;
    return std::string(value);
  }
  if (v.starts_with('/') && !v.starts_with("//")) {
    if (auto mapped = map_path(r, v)) return *mapped;
  }
  return std::string(value);
}

std::string rewrite_set_cookie(const RewriteRules& r, std::string_view value) {
  if (r.off) return std::string(value);
  std::string out;
  bool changed = false;
  std::size_t pos = 0;
  bool first = true;
  while (pos <= value.size()) {
    std::size_t semi = value.find(';', pos);
    if (semi == std::string_view::npos) semi = value.size();
    const std::string_view part = value.substr(pos, semi - pos);
    const std::string_view attr = net::trim_ows(part);
    std::string kept(part);
    if (!first) {
      if (istarts_with(attr, "domain=")) {
        std::string_view domain = net::trim_ows(attr.substr(7));
        if (domain.starts_with('.')) domain.remove_prefix(1);
        if (iequals(domain, r.host)) {
          changed = true;
          kept.clear();
        }
      } else if (istarts_with(attr, "path=")) {
        const std::string_view path = net::trim_ows(attr.substr(5));
        if (auto mapped = map_path(r, path)) {
          // A cookie path matches everything below it: the base without
          // its trailing slash.
          std::string p = *mapped;
          if (p.size() > 1 && p.back() == '/') p.pop_back();
          if (p != path) {
            changed = true;
            kept = " Path=" + p;
          }
        }
      }
    }
    if (first || !kept.empty()) {
      if (!first) out += ';';
      out += kept;
    }
    first = false;
    if (semi == value.size()) break;
    pos = semi + 1;
  }
  return changed ? out : std::string(value);
}

void rewrite_response_head(const RewriteRules& r, tunnel::v1::ResponseHead& head) {
  if (r.off) return;
  for (auto& h : *head.mutable_headers()) {
    const std::string& name = h.name();
    if (iequals(name, "location") || iequals(name, "content-location")) {
      h.set_value(rewrite_location(r, h.value()));
    } else if (iequals(name, "set-cookie")) {
      h.set_value(rewrite_set_cookie(r, h.value()));
    }
  }
}

}  // namespace postern::policy
