#pragma once
// Cheap guard against deeply nested JSON bodies, run before any parser sees them.

#include <cstdint>
#include <string_view>

namespace postern::policy {

/// Measures the nesting depth of a JSON text fed in arbitrary chunks (objects
/// and arrays count; strings with escapes, including '\"' and brackets inside
/// strings, are skipped correctly across chunk boundaries). Does not validate
/// the JSON otherwise. Not thread-safe.
///
/// "1" has depth 0, "[]" depth 1, "{"a":[1]}" depth 2. Unbalanced closers are
/// ignored rather than driving the depth negative.
class JsonDepthScanner {
 public:
  explicit JsonDepthScanner(std::uint32_t max_depth) : max_depth_(max_depth) {}

  /// Returns false once the depth has exceeded max_depth (and stays false).
  /// Scanning stops at that point; later chunks are not looked at.
  bool feed(std::string_view chunk);

  /// Deepest nesting seen so far (max_depth + 1 once exceeded).
  std::uint32_t max_seen() const { return max_seen_ > UINT32_MAX ? UINT32_MAX : static_cast<std::uint32_t>(max_seen_); }
  bool exceeded() const { return exceeded_; }

 private:
  // 64-bit so that max_depth = UINT32_MAX cannot wrap around.
  std::uint64_t max_depth_;
  std::uint64_t depth_ = 0;
  std::uint64_t max_seen_ = 0;
  bool in_string_ = false;
  bool escaped_ = false;  // the previous byte inside a string was a backslash
  bool exceeded_ = false;
};

}  // namespace postern::policy
