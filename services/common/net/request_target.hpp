#pragma once
// The request target as the edge routes it: normalised once, before routing
// and before any policy looks at it, so that no spelling of a path can leave
// the API it matched (RFC 3986 section 6.2.2). Pure and thread-safe.

#include <optional>
#include <string>
#include <string_view>

namespace postern::net {

/// An origin-form target after normalisation, or why it was refused.
struct NormalizedTarget {
  std::string target;  ///< normalised path, then the query ("?..." as sent)
  std::string error;   ///< non-empty: refuse the request with 400 and this
  bool ok() const { return error.empty(); }
};

/// Normalises an origin-form request target ("/path?query"):
/// - percent-encoded unreserved characters (ALPHA DIGIT - . _ ~) are decoded,
///   other escapes get upper-case hex;
/// - dot segments are removed (RFC 3986 section 5.2.4: "/a/./b/../c" is
///   "/a/c"; ".." never climbs above the root);
/// Refused (400): a target that is not origin-form; a malformed escape
/// ("%zz", "%4"); an encoded '/', '\' or NUL ("%2F", "%5C", "%00"), which a
/// native service may decode into a different path than the one routed; a
/// '\' (some servers take it for '/'); an encoded dot segment ("%2e%2e"),
/// which only an attack sends; a segment that is a dot segment with
/// parameters ("..;x", read as ".." by some servers).
NormalizedTarget normalize_target(std::string_view target);

/// True if `target` is already normalised: what a hop that receives a
/// target from another zone checks before trusting it.
bool is_normalized_target(std::string_view target);

}  // namespace postern::net
