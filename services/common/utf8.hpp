#pragma once
// UTF-8 validity, one sequence at a time (RFC 3629 section 4). Pure.

#include <cstddef>
#include <string_view>

namespace postern {

/// Length of the valid UTF-8 sequence that starts at `s[i]` (1 for ASCII),
/// or 0 when none does there: a continuation byte first, an overlong form,
/// a surrogate, a code point above U+10FFFF, or a sequence cut short.
inline std::size_t utf8_sequence(std::string_view s, std::size_t i) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data()) + i;
  const std::size_t left = s.size() - i;
  const unsigned char c = p[0];
  if (c < 0x80) return 1;
  std::size_t len = 0;
  // Bounds on the second byte rule out overlongs (E0, F0), surrogates (ED)
  // and code points above U+10FFFF (F4).
  unsigned char lo = 0x80, hi = 0xbf;
  if (c >= 0xc2 && c <= 0xdf) {
    len = 2;
  } else if (c >= 0xe0 && c <= 0xef) {
    len = 3;
    if (c == 0xe0) lo = 0xa0;
    if (c == 0xed) hi = 0x9f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    len = 4;
    if (c == 0xf0) lo = 0x90;
    if (c == 0xf4) hi = 0x8f;
  } else {
    return 0;
  }
  if (left < len || p[1] < lo || p[1] > hi) return 0;
  for (std::size_t k = 2; k < len; ++k) {
    if (p[k] < 0x80 || p[k] > 0xbf) return 0;
  }
  return len;
}

}  // namespace postern
