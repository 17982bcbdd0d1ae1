#include "common/event.hpp"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <vector>

namespace postern {
namespace {

using namespace std::chrono_literals;

// Several coroutines waiting on one Event with different limits: each
// returns at its own limit (or when set), and waiting costs a few wake-ups,
// not a busy loop of waiters cancelling each other's waits.
TEST(Event, WaitersWithDifferentLimitsDoNotSpin) {
  asio::io_context io;
  Event e(io.get_executor());
  const auto start = std::chrono::steady_clock::now();
  std::vector<double> returned_ms(3, -1);
  std::vector<int> results(3, -1);
  const std::chrono::milliseconds limits[] = {50ms, 150ms, 10s};
  for (int i = 0; i < 3; ++i) {
    asio::co_spawn(
        io,
        [&, i]() -> asio::awaitable<void> {
          const bool set = co_await e.wait_for(limits[i]);
          results[i] = set ? 1 : 0;
          returned_ms[i] =
              std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
        },
        asio::detached);
  }
  asio::steady_timer setter(io, 1s);
  setter.async_wait([&](boost::system::error_code) { e.set(); });
  const std::size_t handlers = io.run();

  EXPECT_EQ(results[0], 0);
  EXPECT_EQ(results[1], 0);
  EXPECT_EQ(results[2], 1);
  EXPECT_GE(returned_ms[0], 50);
  EXPECT_GE(returned_ms[1], 150);
  EXPECT_GE(returned_ms[2], 1000);
  // A handful per waiter and wake-up; a spin runs tens of thousands.
  EXPECT_LT(handlers, 100u);
}

TEST(Event, ResetWhileWaitingKeepsTheWaiterWaiting) {
  asio::io_context io;
  Event e(io.get_executor());
  bool done = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        co_await e.wait();
        done = true;
      },
      asio::detached);
  asio::steady_timer t(io, 20ms);
  t.async_wait([&](boost::system::error_code) {
    e.reset();
    EXPECT_FALSE(done);
    t.expires_after(20ms);
    t.async_wait([&](boost::system::error_code) { e.set(); });
  });
  io.run();
  EXPECT_TRUE(done);
}

}  // namespace
}  // namespace postern
