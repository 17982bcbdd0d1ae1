#pragma once
// Keeping internal names inside: a native service's redirect, its
// Content-Location and its cookies name the native URL (host, port, base
// path); on the way out they are rewritten to the API's public base path
// (policy.proto, ResponseRewrite). Used by the connector (reverse invoke)
// and the edge (DMZ-local upstreams) as a ResponseSink in front of the
// client's.

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/exchange.hpp"

namespace postern::policy {

struct CompiledApi;

/// Where the API is served and where the native service is.
struct RewriteRules {
  bool off = false;
  /// Explicit prefix rules (from, to), tried first.
  std::vector<std::pair<std::string, std::string>> prefixes;
  /// The API's public base path without a trailing slash ("" at the root).
  std::string public_base;
  /// The native service: scheme, host, port, base path ("" or "/x").
  bool tls = false;
  std::string host, port, native_base;

  /// For `api` served by the native origin (tls, host, port, base path of
  /// the alias or upstream URL); `prefix` is the API's path on top (the
  /// routing path for reverse invoke, "" when the URL already holds it).
  static RewriteRules of(const CompiledApi& api, bool tls, std::string host, std::string port,
                         std::string_view origin_base, std::string_view prefix);
};

/// The rewritten Location / Content-Location, or the value unchanged.
std::string rewrite_location(const RewriteRules& rules, std::string_view value);
/// The rewritten Set-Cookie value (Domain, Path), or the value unchanged.
std::string rewrite_set_cookie(const RewriteRules& rules, std::string_view value);
/// Applies both to a response head's headers.
void rewrite_response_head(const RewriteRules& rules, tunnel::v1::ResponseHead& head);

/// A ResponseSink that rewrites the head and passes everything on.
class RewritingSink final : public HeadEditingSink {
 public:
  RewritingSink(ResponseSink& next, const RewriteRules& rules) : HeadEditingSink(next), rules_(rules) {}

 private:
  void edit(tunnel::v1::ResponseHead& head) override { rewrite_response_head(rules_, head); }
  const RewriteRules& rules_;
};

}  // namespace postern::policy
