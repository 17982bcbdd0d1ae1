#include "common/tunnel/lane.hpp"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include "common/tunnel/frames.hpp"
#include "support/memory_lane.hpp"

namespace postern::tunnel {
namespace {

using namespace std::chrono_literals;
using testing::MemoryLaneIo;

struct Collect final : LaneHandler {
  std::vector<tv1::Frame> frames;
  int messages = 0;
  int drains = 0;
  void on_frame(tv1::Frame&& f) override { frames.push_back(std::move(f)); }
  void on_message() override { ++messages; }
  void on_drain() override { ++drains; }
};

struct Pair {
  asio::io_context io;
  MemoryLaneIo* a_io = nullptr;
  MemoryLaneIo* b_io = nullptr;
  std::unique_ptr<Lane> a, b;
  Collect at_a, at_b;
  bool a_done = false, b_done = false;

  Pair() {
    auto [x, y] = testing::memory_lane_pair(io.get_executor());
    a_io = x.get();
    b_io = y.get();
    a = std::make_unique<Lane>(io.get_executor(), std::move(x));
    b = std::make_unique<Lane>(io.get_executor(), std::move(y));
    asio::co_spawn(io, a->run(at_a), [this](std::exception_ptr) { a_done = true; });
    asio::co_spawn(io, b->run(at_b), [this](std::exception_ptr) { b_done = true; });
  }
  void run(std::chrono::milliseconds d = 20ms) {
    io.run_for(d);
    io.restart();
  }
};

tv1::Frame piece(std::uint64_t id, const std::string& data) {
  tv1::Frame f;
  f.set_exchange(id);
  f.set_body(data);
  return f;
}

TEST(TunnelLane, FramesQueuedTogetherGoAsOneMessage) {
  Pair p;
  p.a->send(piece(1, "one"));
  p.a->send(piece(2, "two"));
  p.a->send(end_frame(1));
  p.run();
  ASSERT_EQ(p.at_b.frames.size(), 3u);
  EXPECT_EQ(p.at_b.messages, 1);
  EXPECT_EQ(p.a_io->written(), std::vector<int>{3});
  EXPECT_TRUE(p.a->up());
}

// Everything queued while a write is in flight goes in the next message,
// whatever exchanges it belongs to: batching with no timer.
TEST(TunnelLane, WhatQueuesDuringAWriteGoesInTheNextMessage) {
  Pair p;
  p.a_io->hold_writes();
  p.a->send(piece(1, "first"));
  p.run();
  for (std::uint64_t id = 2; id < 12; ++id) p.a->send(piece(id, "x"));
  p.run();
  EXPECT_TRUE(p.at_b.frames.empty()) << "the first write is still in flight";
  p.a_io->release_writes();
  p.run();
  EXPECT_EQ(p.a_io->written(), (std::vector<int>{1, 10}));
  EXPECT_EQ(p.at_b.frames.size(), 11u);
  EXPECT_EQ(p.at_b.messages, 2);
}

TEST(TunnelLane, DrainMarkGoesAfterWhatIsQueued) {
  Pair p;
  p.a->send(piece(1, "before"));
  p.a->send_drain();
  p.run();
  EXPECT_EQ(p.at_b.frames.size(), 1u);
  EXPECT_EQ(p.at_b.drains, 1);
}

TEST(TunnelLane, CloseWritesWhatIsQueuedThenEndsBothSides) {
  Pair p;
  p.a->send(piece(1, "last words"));
  p.a->close();
  p.run();
  EXPECT_EQ(p.at_b.frames.size(), 1u);
  EXPECT_TRUE(p.a->over());
  EXPECT_TRUE(p.b->over());
  EXPECT_TRUE(p.a_done && p.b_done);
  p.a->send(piece(1, "dropped"));  // harmless once over
}

TEST(TunnelLane, AbortLosesWhatIsQueuedAndEndsTheLane) {
  Pair p;
  p.a_io->hold_writes();
  p.a->send(piece(1, "held"));
  p.run();
  p.a->send(piece(2, "lost"));
  p.a->abort();
  p.run();
  EXPECT_TRUE(p.a->over());
  EXPECT_TRUE(p.a_done && p.b_done);
  EXPECT_TRUE(p.at_b.frames.empty());
}

}  // namespace
}  // namespace postern::tunnel
