#include "demo/target.hpp"

#include <limits>

namespace postern::demo {
namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Form-style decoding: "%41" -> "A", "+" -> " ".
std::optional<std::string> decode_component(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    const char c = in[i];
    if (c == '+') {
      out += ' ';
    } else if (c == '%') {
      if (i + 2 >= in.size()) return std::nullopt;
      const int hi = hex_value(in[i + 1]);
      const int lo = hex_value(in[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

std::optional<Target> Target::parse(std::string_view target) {
  // Absolute-form is what a client talking to a proxy sends; drop scheme and authority.
  std::string absolute_rest;
  if (!target.starts_with('/')) {
    const auto scheme_end = target.find("://");
    if (scheme_end == std::string_view::npos) return std::nullopt;
    const auto path_start = target.find_first_of("/?", scheme_end + 3);
    // "http://host" and "http://host?x" have an empty path, which means "/".
    absolute_rest = path_start == std::string_view::npos ? std::string() : std::string(target.substr(path_start));
    if (!absolute_rest.starts_with('/')) absolute_rest.insert(0, 1, '/');
    target = absolute_rest;
  }
  Target t;
  const auto q = target.find('?');
  t.path_ = std::string(target.substr(0, q));
  if (q == std::string_view::npos) return t;

  std::string_view query = target.substr(q + 1);
  // A fragment never reaches a server, but cut it off if a client sends one.
  if (const auto hash = query.find('#'); hash != std::string_view::npos) query = query.substr(0, hash);
  while (!query.empty()) {
    const auto amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (pair.empty()) continue;
    const auto eq = pair.find('=');
    auto name = decode_component(pair.substr(0, eq));
    auto value = decode_component(eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1));
    if (!name || !value) return std::nullopt;
    t.query_.emplace_back(std::move(*name), std::move(*value));
  }
  return t;
}

std::optional<std::string_view> Target::param(std::string_view name) const {
  for (const auto& [k, v] : query_) {
    if (k == name) return std::string_view(v);
  }
  return std::nullopt;
}

std::optional<std::uint64_t> parse_uint(std::string_view text) {
  if (text.empty() || text.size() > 20) return std::nullopt;
  std::uint64_t value = 0;
  for (const char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    const auto digit = static_cast<std::uint64_t>(c - '0');
    if (value > (std::numeric_limits<std::uint64_t>::max() - digit) / 10) return std::nullopt;
    value = value * 10 + digit;
  }
  return value;
}

}  // namespace postern::demo
