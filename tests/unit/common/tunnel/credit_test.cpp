#include "common/tunnel/credit.hpp"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

namespace postern::tunnel {
namespace {

using namespace std::chrono_literals;

TEST(TunnelCredit, ReceiveWindowOpensPastTheInitialCreditAndGrantsInSteps) {
  ReceiveWindow w(4u << 20);
  EXPECT_EQ(w.opening_grant(), (4u << 20) - kInitialCredit);
  // Steps of 32 KiB: nothing per small piece, and never more than a
  // relay's smallest cap (64 KiB) between grants.
  EXPECT_EQ(w.consumed(100), 0u);
  EXPECT_EQ(w.consumed((32u << 10) - 200), 0u);
  EXPECT_EQ(w.consumed(100), 32u << 10);
  EXPECT_EQ(w.consumed(10), 0u);
  EXPECT_EQ(w.consumed(256u << 10), (256u << 10) + 10) << "a large piece is granted back at once";
  // A window below the initial credit is the initial credit.
  ReceiveWindow small(1000);
  EXPECT_EQ(small.opening_grant(), 0u);
  EXPECT_EQ(small.consumed(16u << 10), 16u << 10) << "steps are at least 16 KiB";
}

// The broker's count: a piece is allowed while the count is above zero (a
// piece larger than what is left still goes, as the sender's SendCredit
// allows); past that, the sender broke the protocol.
TEST(TunnelCredit, CreditCountAllowsWhatTheSenderMaySend) {
  CreditCount c;
  EXPECT_EQ(c.may_send(), static_cast<std::int64_t>(kInitialCredit));
  EXPECT_TRUE(c.take(kInitialCredit - 1));
  EXPECT_TRUE(c.take(16u << 10)) << "the last byte of credit lets a whole piece go";
  EXPECT_FALSE(c.take(1));
  EXPECT_EQ(c.give(100u << 10), 100u << 10);
  EXPECT_TRUE(c.take(10));
}

// With a cap, the count passes on grants only up to the cap outstanding
// (the broker drops what would let a connector run ahead of its edge's
// client).
TEST(TunnelCredit, CreditCountCapsWhatIsPassedOn) {
  CreditCount c;
  const std::uint64_t cap = 256u << 10;
  EXPECT_EQ(c.give(1u << 30, cap), cap - kInitialCredit);
  EXPECT_EQ(c.give(10, cap), 0u);
  EXPECT_TRUE(c.take(100u << 10));
  EXPECT_EQ(c.give(1u << 30, cap), 100u << 10) << "the next grant fills what the pieces made room for";
  // A peer claiming absurd grants saturates instead of overflowing.
  CreditCount d;
  d.give(~std::uint64_t{0});
  d.give(~std::uint64_t{0});
  EXPECT_GT(d.may_send(), 0);
}

TEST(TunnelCredit, SendCreditWaitsForAGrantAndReleaseEndsTheWait) {
  asio::io_context io;
  SendCredit credit(io.get_executor());
  int stage = 0;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        co_await credit.take(kInitialCredit);  // all of it: no wait
        stage = 1;
        co_await credit.take(10);  // waits for a grant
        stage = 2;
        co_await credit.take(10);  // waits again: released instead
        stage = 3;
      },
      asio::detached);
  io.run_for(20ms);
  io.restart();
  EXPECT_EQ(stage, 1);
  EXPECT_EQ(credit.available(), 0);
  credit.grant(5);
  io.run_for(20ms);
  io.restart();
  EXPECT_EQ(stage, 2) << "some credit lets a larger piece go";
  EXPECT_EQ(credit.available(), -5);
  credit.release();
  io.run_for(20ms);
  EXPECT_EQ(stage, 3);
}

}  // namespace
}  // namespace postern::tunnel
