#include "common/net/request_target.hpp"

#include <vector>

namespace postern::net {

namespace {

int hex(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool unreserved(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
         c == '_' || c == '~';
}

// One path segment after decoding the unreserved escapes; `encoded_dot` is
// set when a '.' came from "%2e".
struct Segment {
  std::string text;
  bool encoded_dot = false;
};

}  // namespace

NormalizedTarget normalize_target(std::string_view target) {
  NormalizedTarget out;
  if (target.empty() || target.front() != '/') {
    out.error = "the request target must be a path starting with '/' (origin-form)";
    return out;
  }
  const auto q = target.find('?');
  const std::string_view path = target.substr(0, q);
  const std::string_view query = q == std::string_view::npos ? std::string_view{} : target.substr(q);

  // Split into segments, decoding escapes of unreserved characters.
  std::vector<Segment> segments;
  Segment cur;
  for (std::size_t i = 1; i <= path.size(); ++i) {
    if (i == path.size() || path[i] == '/') {
      segments.push_back(std::move(cur));
      cur = {};
      continue;
    }
    const char c = path[i];
    if (c == '\\') {
      out.error = "a '\\' in the path (some servers read it as '/')";
      return out;
    }
    if (c != '%') {
      cur.text += c;
      continue;
    }
    if (i + 2 >= path.size() || hex(path[i + 1]) < 0 || hex(path[i + 2]) < 0) {
      out.error = "a malformed percent-escape in the path";
      return out;
    }
    const auto byte = static_cast<unsigned char>(hex(path[i + 1]) * 16 + hex(path[i + 2]));
    if (byte == '/' || byte == '\\' || byte == 0) {
      out.error = std::string("an encoded ") + (byte == '/' ? "'/'" : byte == '\\' ? "'\\'" : "NUL") +
                  " in the path (it would route differently than the native service reads it)";
      return out;
    }
    if (unreserved(byte)) {
      cur.text += static_cast<char>(byte);
      if (byte == '.') cur.encoded_dot = true;
    } else {
      static constexpr char kHex[] = "0123456789ABCDEF";
      cur.text += '%';
      cur.text += kHex[byte >> 4];
      cur.text += kHex[byte & 15];
    }
    i += 2;
  }

  // RFC 3986 5.2.4 on whole segments; the last segment "." or ".." leaves a
  // trailing slash ("/a/b/.." is "/a/").
  std::vector<std::string> kept;
  bool trailing_slash = false;
  for (std::size_t k = 0; k < segments.size(); ++k) {
    const Segment& s = segments[k];
    const std::string_view before_params = std::string_view(s.text).substr(0, s.text.find(';'));
    const bool dot = s.text == "." || s.text == "..";
    if (dot && s.encoded_dot) {
      out.error = "an encoded dot segment ('%2e') in the path";
      return out;
    }
    if (!dot && (before_params == "." || before_params == "..")) {
      out.error = "a dot segment with parameters ('" + s.text + "') in the path";
      return out;
    }
    const bool last = k + 1 == segments.size();
    if (s.text == ".") {
      trailing_slash = last;
      continue;
    }
    if (s.text == "..") {
      if (!kept.empty()) kept.pop_back();
      trailing_slash = last;
      continue;
    }
    kept.push_back(s.text);
    trailing_slash = false;
  }
  std::string normalized;
  for (const auto& s : kept) normalized += "/" + s;
  if (trailing_slash || normalized.empty()) normalized += '/';
  out.target = normalized + std::string(query);
  return out;
}

bool is_normalized_target(std::string_view target) {
  const auto n = normalize_target(target);
  return n.ok() && n.target == target;
}

}  // namespace postern::net
