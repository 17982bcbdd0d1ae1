#include "common/observability/log.hpp"

#include <gtest/gtest.h>

#include <regex>

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

TEST(JsonEscape, PlainRunsAroundEscapesAreKept) {
  EXPECT_EQ(escaped(""), "");
  EXPECT_EQ(escaped("plain text / with ~ all printable"), "plain text / with ~ all printable");
  EXPECT_EQ(escaped("\"lead"), "\\\"lead");
  EXPECT_EQ(escaped("trail\\"), "trail\\\\");
  EXPECT_EQ(escaped("a\"\"b\x1f"), "a\\\"\\\"b\\u001f");
}

TEST(LogRecord, TimestampIsIso8601UtcWithMilliseconds) {
  for (int i = 0; i < 3; ++i) {  // the cached second, then a hit on it
    const std::string line = write_record(Level::warn, "m", "");
    EXPECT_TRUE(std::regex_search(
        line, std::regex(R"(^\{"ts":"20[0-9]{2}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9]\.[0-9]{3}Z",)")))
        << line;
  }
}

TEST(LogRecord, NumbersAreWrittenAsPrintfWouldWriteThem) {
  testing::internal::CaptureStdout();
  POSTERN_LOG(warn, "n")
      .kv("i", std::int64_t{-42})
      .kv("u", std::uint64_t{18446744073709551615u})
      .kv("d", 12.3456789)
      .kv("small", 0.000123)
      .kv("big", 1e21)
      .kv("zero", 0.0);
  const std::string out = testing::internal::GetCapturedStdout();
  EXPECT_NE(out.find(R"("i":-42,"u":18446744073709551615,"d":12.3457,"small":0.000123,"big":1e+21,"zero":0})"),
            std::string::npos)
      << out;
}

TEST(LogRecord, RequestRecordsWaitForTheNextOtherRecordOrAFlushInOrder) {
  testing::internal::CaptureStdout();
  ExchangeRecord r;
  r.request_id = "first";
  log_exchange(r);
  r.request_id = "second";
  log_exchange(r);
  POSTERN_LOG(warn, "third");
  r.request_id = "fourth";
  log_exchange(r);
  flush();
  const std::string out = testing::internal::GetCapturedStdout();
  const auto first = out.find("\"request_id\":\"first\"");
  const auto second = out.find("\"request_id\":\"second\"");
  const auto third = out.find("\"msg\":\"third\"");
  const auto fourth = out.find("\"request_id\":\"fourth\"");
  ASSERT_NE(fourth, std::string::npos) << out;
  EXPECT_LT(first, second) << out;
  EXPECT_LT(second, third) << out;
  EXPECT_LT(third, fourth) << out;
}

}  // namespace
}  // namespace postern::log
