#pragma once
// The request-target of a demo request, split into a path and its query.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace postern::demo {

/// A request-target ("/bytes/10?chunked=1") as the demo endpoints see it: the
/// path exactly as sent, and the query parameters percent-decoded.
/// Plain value type; no I/O.
class Target {
 public:
  /// Parses origin-form ("/p?q") or absolute-form ("http://host/p?q").
  /// Returns nullopt for anything else, or for a malformed percent-escape.
  static std::optional<Target> parse(std::string_view target);

  /// The path, without the query, not decoded.
  const std::string& path() const { return path_; }

  /// The decoded value of the first query parameter called `name`.
  std::optional<std::string_view> param(std::string_view name) const;

 private:
  std::string path_;
  std::vector<std::pair<std::string, std::string>> query_;
};

/// Parses a whole string of decimal digits; nullopt on anything else or on overflow.
std::optional<std::uint64_t> parse_uint(std::string_view text);

}  // namespace postern::demo
