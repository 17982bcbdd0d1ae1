#include "common/policy/token_bucket.hpp"

#include <gtest/gtest.h>

#include <stdexcept>

namespace postern::policy {
namespace {

using namespace std::chrono_literals;
using Clock = TokenBucket::Clock;

// An arbitrary fixed origin; the bucket only ever sees differences.
const Clock::time_point t0 = Clock::time_point{} + 1000h;

TEST(TokenBucket, StartsFullAndDrainsBurst) {
  TokenBucket b(10, 1s, 5, t0);
  for (std::uint32_t i = 0; i < 5; ++i) {
    const auto r = b.take(t0);
    EXPECT_TRUE(r.allowed) << i;
    EXPECT_EQ(r.remaining, 4 - i);
    EXPECT_EQ(r.retry_after, 0s);
  }
  const auto r = b.take(t0);
  EXPECT_FALSE(r.allowed);
  EXPECT_EQ(r.remaining, 0u);
  EXPECT_EQ(r.retry_after, 1s);  // 100ms rounds up to a whole second
  EXPECT_EQ(r.reset, 1s);        // 500ms to refill 5 tokens
}

TEST(TokenBucket, RefillsOverTime) {
  TokenBucket b(1, 1s, 3, t0);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(b.take(t0).allowed);
  EXPECT_FALSE(b.take(t0).allowed);
  EXPECT_FALSE(b.take(t0 + 999ms).allowed);

  auto r = b.take(t0 + 1s);
  EXPECT_TRUE(r.allowed);
  EXPECT_EQ(r.remaining, 0u);
  EXPECT_EQ(r.reset, 3s);

  // 2.5 s later: 2.5 tokens back, take one → 1.5 left.
  r = b.take(t0 + 3500ms);
  EXPECT_TRUE(r.allowed);
  EXPECT_EQ(r.remaining, 1u);
  EXPECT_EQ(r.reset, 2s);  // 1.5 tokens missing → 1.5 s → 2 s
}

TEST(TokenBucket, RefillIsCappedAtBurst) {
  TokenBucket b(1, 1s, 2, t0);
  ASSERT_TRUE(b.take(t0).allowed);
  ASSERT_TRUE(b.take(t0).allowed);
  const auto later = t0 + 24h;
  auto r = b.take(later);
  EXPECT_TRUE(r.allowed);
  EXPECT_EQ(r.remaining, 1u);
  r = b.take(later);
  EXPECT_TRUE(r.allowed);
  EXPECT_EQ(r.remaining, 0u);
  EXPECT_FALSE(b.take(later).allowed);
}

TEST(TokenBucket, RetryAfterAndReset) {
  // One token every 10 s, burst 6.
  TokenBucket b(6, 60s, 6, t0);
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(b.take(t0).allowed);
  auto r = b.take(t0);
  EXPECT_FALSE(r.allowed);
  EXPECT_EQ(r.retry_after, 10s);
  EXPECT_EQ(r.reset, 60s);

  r = b.take(t0 + 3s);
  EXPECT_FALSE(r.allowed);
  EXPECT_EQ(r.retry_after, 7s);
  EXPECT_EQ(r.reset, 57s);

  r = b.take(t0 + 9s + 1ms);
  EXPECT_FALSE(r.allowed);
  EXPECT_EQ(r.retry_after, 1s);  // 999 ms rounds up
  EXPECT_EQ(r.reset, 51s);

  r = b.take(t0 + 10s);
  EXPECT_TRUE(r.allowed);
  EXPECT_EQ(r.retry_after, 0s);
  EXPECT_EQ(r.reset, 60s);  // the token just taken puts it back to empty
}

TEST(TokenBucket, RetryAfterIsAtLeastOneSecond) {
  TokenBucket b(1000, 1s, 1, t0);
  ASSERT_TRUE(b.take(t0).allowed);
  const auto r = b.take(t0 + 999us);
  EXPECT_FALSE(r.allowed);
  EXPECT_EQ(r.retry_after, 1s);
  EXPECT_EQ(r.reset, 1s);
  EXPECT_TRUE(b.take(t0 + 1ms).allowed);
}

TEST(TokenBucket, ResetCountsTheTokenJustTaken) {
  TokenBucket b(1, 1s, 1, t0);
  ASSERT_TRUE(b.take(t0).allowed);
  const auto r = b.take(t0 + 2s);
  EXPECT_TRUE(r.allowed);
  EXPECT_EQ(r.reset, 1s);
  TokenBucket full(5, 1s, 5, t0);
  // Reset is reported after the take, so a fresh bucket says 1 token / 0.2 s → 1 s.
  EXPECT_EQ(full.take(t0).reset, 1s);
}

TEST(TokenBucket, FractionalRatesAccumulateExactly) {
  // 3 per second: tokens at 333.33.. ms, 666.66.. ms, 1 s. No drift over many
  // periods. (Burst 2 so that the fraction past each whole token is not capped away.)
  TokenBucket b(3, 1s, 2, t0);
  ASSERT_TRUE(b.take(t0).allowed);
  ASSERT_TRUE(b.take(t0).allowed);
  auto t = t0;
  int allowed = 0;
  for (int ms = 1; ms <= 10'000; ++ms) {
    t = t0 + std::chrono::milliseconds(ms);
    if (b.take(t).allowed) ++allowed;
  }
  EXPECT_EQ(allowed, 30);
  EXPECT_FALSE(b.take(t0 + 333ms + 10s).allowed);
  EXPECT_TRUE(b.take(t0 + 334ms + 10s).allowed);
}

TEST(TokenBucket, TimeGoingBackwardsAddsNothing) {
  TokenBucket b(1, 1s, 1, t0);
  ASSERT_TRUE(b.take(t0 + 10s).allowed);
  EXPECT_FALSE(b.take(t0).allowed);
  EXPECT_FALSE(b.take(t0 + 10s + 999ms).allowed);
  EXPECT_TRUE(b.take(t0 + 11s).allowed);
}

TEST(TokenBucket, ReconfigureKeepsFill) {
  TokenBucket b(10, 1s, 10, t0);
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(b.take(t0).allowed);  // 4 left
  b.reconfigure(1, 1min, 100, t0);
  auto r = b.take(t0);
  EXPECT_TRUE(r.allowed);
  EXPECT_EQ(r.remaining, 3u);
  EXPECT_EQ(r.reset, std::chrono::seconds(97 * 60));
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(b.take(t0).allowed);
  r = b.take(t0);
  EXPECT_FALSE(r.allowed);
  EXPECT_EQ(r.retry_after, 60s);
}

TEST(TokenBucket, ReconfigureClampsToNewBurst) {
  TokenBucket b(10, 1s, 10, t0);
  b.reconfigure(10, 1s, 2, t0);
  EXPECT_EQ(b.take(t0).remaining, 1u);
  EXPECT_EQ(b.take(t0).remaining, 0u);
  EXPECT_FALSE(b.take(t0).allowed);
}

TEST(TokenBucket, ReconfigureCountsElapsedTimeAtOldRate) {
  TokenBucket b(1, 1s, 10, t0);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(b.take(t0).allowed);
  // 5 s at 1/s → 5 tokens, then the rate drops to 1/min.
  b.reconfigure(1, 1min, 10, t0 + 5s);
  auto r = b.take(t0 + 5s);
  EXPECT_TRUE(r.allowed);
  EXPECT_EQ(r.remaining, 4u);
  // Only 1/60 of a token more after another second.
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(b.take(t0 + 6s).allowed);
  r = b.take(t0 + 6s);
  EXPECT_FALSE(r.allowed);
  EXPECT_EQ(r.retry_after, 59s);
}

TEST(TokenBucket, ReconfigureKeepsFractionalTokens) {
  TokenBucket b(1, 1s, 1, t0);
  ASSERT_TRUE(b.take(t0).allowed);
  // Half a token at 1/s is half a token at 1/10s too: 50 ms more completes it.
  b.reconfigure(1, 100ms, 1, t0 + 500ms);
  EXPECT_FALSE(b.take(t0 + 549ms).allowed);
  EXPECT_TRUE(b.take(t0 + 550ms).allowed);
}

TEST(TokenBucket, LargeValuesDoNotOverflow) {
  TokenBucket b(UINT32_MAX, 24h, UINT32_MAX, t0);
  auto r = b.take(t0);
  EXPECT_TRUE(r.allowed);
  EXPECT_EQ(r.remaining, UINT32_MAX - 1);
  EXPECT_EQ(r.reset, 1s);
  r = b.take(t0 + std::chrono::hours(24 * 365 * 100));
  EXPECT_TRUE(r.allowed);
  EXPECT_EQ(r.remaining, UINT32_MAX - 1);

  TokenBucket slow(1, std::chrono::hours(24 * 365), 1, t0);
  ASSERT_TRUE(slow.take(t0).allowed);
  r = slow.take(t0);
  EXPECT_FALSE(r.allowed);
  EXPECT_EQ(r.retry_after, std::chrono::seconds(365 * 86400));
}

TEST(TokenBucket, RejectsNonsenseParameters) {
  EXPECT_THROW(TokenBucket(0, 1s, 1, t0), std::invalid_argument);
  EXPECT_THROW(TokenBucket(1, 1s, 0, t0), std::invalid_argument);
  EXPECT_THROW(TokenBucket(1, 0s, 1, t0), std::invalid_argument);
  EXPECT_THROW(TokenBucket(1, -1s, 1, t0), std::invalid_argument);
}

}  // namespace
}  // namespace postern::policy
