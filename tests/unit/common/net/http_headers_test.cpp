#include "common/net/http_headers.hpp"

#include <gtest/gtest.h>

#include <chrono>

namespace postern::net {
namespace {

TEST(HttpDate, IsImfFixdateInGmt) {
  // RFC 9110 5.6.7's own example: 784111777 s after the epoch.
  const auto t = std::chrono::system_clock::time_point(std::chrono::seconds(784111777));
  EXPECT_EQ(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
  EXPECT_EQ(http_date(std::chrono::system_clock::time_point(std::chrono::seconds(0))), "Thu, 01 Jan 1970 00:00:00 GMT");
}

TEST(HttpHeaders, NamesCompareWithoutCase) {
  EXPECT_TRUE(iequals("RateLimit-Limit", "ratelimit-limit"));
  EXPECT_FALSE(iequals("RateLimit-Limit", "RateLimit-Limits"));
}

}  // namespace
}  // namespace postern::net
