#include "common/policy/json_depth.hpp"

#include <gtest/gtest.h>

#include <string>
#include <string_view>

namespace postern::policy {
namespace {

std::uint32_t depth_of(std::string_view json, std::uint32_t max = 1000) {
  JsonDepthScanner s(max);
  s.feed(json);
  return s.max_seen();
}

TEST(JsonDepth, Basics) {
  EXPECT_EQ(depth_of(""), 0u);
  EXPECT_EQ(depth_of("1"), 0u);
  EXPECT_EQ(depth_of("\"x\""), 0u);
  EXPECT_EQ(depth_of("[]"), 1u);
  EXPECT_EQ(depth_of("{}"), 1u);
  EXPECT_EQ(depth_of(R"({"a":[1,{"b":[]}],"c":{}})"), 4u);
  EXPECT_EQ(depth_of("[[],[],[[]]]"), 3u);
  EXPECT_EQ(depth_of("[1] [[2]]"), 2u);  // depth returns to 0 between values
}

TEST(JsonDepth, BracketsInStringsDoNotCount) {
  EXPECT_EQ(depth_of(R"(["[[[{{{", "]]]]"])"), 1u);
  EXPECT_EQ(depth_of(R"({"[[": "}}}}", "x": [[1]]})"), 3u);
}

TEST(JsonDepth, EscapesInStrings) {
  // "a\\\"[[" is the string a\"[[ : an escaped backslash, an escaped quote,
  // then brackets that are still inside the string.
  EXPECT_EQ(depth_of(R"(["a\\\"[["])"), 1u);
  // An escaped backslash ends the escape: the quote after it closes the string.
  EXPECT_EQ(depth_of(R"(["a\\", [[1]]])"), 3u);
  EXPECT_EQ(depth_of(R"(["\"", ["\\"], "\u005b"])"), 2u);
  EXPECT_EQ(depth_of(R"(["\\\\\\\\\""]] [[)"), 2u);
}

TEST(JsonDepth, BackslashOutsideStringsIsNotAnEscape) {
  // Invalid JSON, but a stray backslash must not swallow the next byte.
  EXPECT_EQ(depth_of(R"(\[[)"), 2u);
}

TEST(JsonDepth, UnbalancedClosersDoNotUnderflow) {
  EXPECT_EQ(depth_of("]]]}}}[["), 2u);
}

TEST(JsonDepth, EveryChunkSplitGivesTheSameAnswer) {
  const std::string sample = R"({"k\"[": ["a\\\"[[", {"x": [1, "]]", {"y\\": [[true]]}]}], "z": "\\"})";
  const auto whole = depth_of(sample);
  ASSERT_EQ(whole, 7u);
  for (std::size_t i = 0; i <= sample.size(); ++i) {
    for (std::size_t j = i; j <= sample.size(); ++j) {
      JsonDepthScanner s(1000);
      EXPECT_TRUE(s.feed(std::string_view(sample).substr(0, i)));
      EXPECT_TRUE(s.feed(std::string_view(sample).substr(i, j - i)));
      EXPECT_TRUE(s.feed(std::string_view(sample).substr(j)));
      ASSERT_EQ(s.max_seen(), whole) << "split at " << i << "," << j;
    }
  }
  JsonDepthScanner bytewise(1000);
  for (char c : sample) bytewise.feed(std::string_view(&c, 1));
  EXPECT_EQ(bytewise.max_seen(), whole);
}

TEST(JsonDepth, ExceededAtEverySplit) {
  const std::string sample = R"({"a\"{{{{": [{"b": "\\"}, [[0]]]})";  // depth 4
  for (std::size_t i = 0; i <= sample.size(); ++i) {
    JsonDepthScanner ok(4);
    ok.feed(sample.substr(0, i));
    ok.feed(sample.substr(i));
    EXPECT_FALSE(ok.exceeded()) << i;
    EXPECT_EQ(ok.max_seen(), 4u) << i;

    JsonDepthScanner tight(3);
    tight.feed(sample.substr(0, i));
    tight.feed(sample.substr(i));
    EXPECT_TRUE(tight.exceeded()) << i;
  }
}

TEST(JsonDepth, ExceededStaysExceeded) {
  JsonDepthScanner s(2);
  EXPECT_TRUE(s.feed("[["));
  EXPECT_FALSE(s.exceeded());
  EXPECT_TRUE(s.feed("]"));
  EXPECT_FALSE(s.feed("[[]]"));
  EXPECT_TRUE(s.exceeded());
  EXPECT_EQ(s.max_seen(), 3u);
  // Closing everything does not undo it, and nothing more is counted.
  EXPECT_FALSE(s.feed("]]]]]"));
  EXPECT_FALSE(s.feed(""));
  EXPECT_FALSE(s.feed("1"));
  EXPECT_FALSE(s.feed("[[[[[[[[[["));
  EXPECT_TRUE(s.exceeded());
  EXPECT_EQ(s.max_seen(), 3u);
}

TEST(JsonDepth, MaxDepthZeroAllowsOnlyScalars) {
  JsonDepthScanner s(0);
  EXPECT_TRUE(s.feed("\"[{\" 12 true"));
  EXPECT_FALSE(s.feed("[]"));
  EXPECT_TRUE(s.exceeded());
}

TEST(JsonDepth, DeepInputStopsEarly) {
  const std::string deep(1'000'000, '[');
  JsonDepthScanner s(64);
  EXPECT_FALSE(s.feed(deep));
  EXPECT_EQ(s.max_seen(), 65u);
}

}  // namespace
}  // namespace postern::policy
