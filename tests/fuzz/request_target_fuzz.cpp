// libFuzzer target: request-target normalisation (the edge's first step,
// before routing and policies). Any bytes: never a crash, and whatever is
// accepted holds the invariants routing relies on: a fixed point of the
// normalisation, no dot segment, no encoded '/', '\' or NUL, and the query
// passed through unchanged.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "common/net/request_target.hpp"

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

bool has_segment(std::string_view path, std::string_view seg) {
  for (std::size_t at = 0; at < path.size();) {
    const auto next = path.find('/', at + 1);
    const auto s = path.substr(at + 1, next == std::string_view::npos ? std::string_view::npos : next - at - 1);
    if (s == seg) return true;
    if (next == std::string_view::npos) break;
    at = next;
  }
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const auto n = postern::net::normalize_target(in);
  if (!n.ok()) {
    check(!n.error.empty());
    return 0;
  }
  const std::string& t = n.target;
  check(!t.empty() && t.front() == '/');
  const std::string_view path = std::string_view(t).substr(0, t.find('?'));
  check(!has_segment(path, ".") && !has_segment(path, ".."));
  for (std::string_view bad : {"%2F", "%2f", "%5C", "%5c", "%00", "\\", "%2E", "%2e"}) {
    check(path.find(bad) == std::string_view::npos);
  }
  // The query is the native service's: untouched.
  const auto q_in = in.find('?');
  const auto q_out = t.find('?');
  check((q_in == std::string_view::npos) == (q_out == std::string::npos));
  if (q_in != std::string_view::npos) check(in.substr(q_in) == std::string_view(t).substr(q_out));
  // Normalising again changes nothing.
  const auto again = postern::net::normalize_target(t);
  check(again.ok() && again.target == t);
  check(postern::net::is_normalized_target(t));
  return 0;
}
