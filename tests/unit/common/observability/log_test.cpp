#include "common/observability/log.hpp"

#include <gtest/gtest.h>

namespace postern::log {
namespace {

std::string escaped(std::string_view s) {
  std::string out;
  json_escape(out, s);
  return out;
}

TEST(JsonEscape, ControlsAndQuotesAreEscaped) {
  EXPECT_EQ(escaped("a\"b\\c\nd\te\x01\x7f"), "a\\\"b\\\\c\\nd\\te\\u0001\\u007f");
}

TEST(JsonEscape, ValidUtf8PassesInvalidBytesBecomeReplacementCharacters) {
  EXPECT_EQ(escaped("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"), "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
  // A lone high byte, a cut sequence, an overlong, a surrogate: each byte
  // that is not UTF-8 becomes U+FFFD, so the log line stays valid JSON.
  EXPECT_EQ(escaped("x\xffy"), "x\\ufffdy");
  EXPECT_EQ(escaped("\xc3"), "\\ufffd");
  EXPECT_EQ(escaped("\xc0\xaf"), "\\ufffd\\ufffd");
  EXPECT_EQ(escaped("\xed\xa0\x80"), "\\ufffd\\ufffd\\ufffd");
}

}  // namespace
}  // namespace postern::log
