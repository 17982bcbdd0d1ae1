#include "common/tunnel/scheduler.hpp"

#include <gtest/gtest.h>

#include "common/tunnel/credit.hpp"
#include "common/tunnel/frames.hpp"

namespace postern::tunnel {
namespace {

tv1::Frame piece(std::uint64_t id, std::size_t n, char c = 'x') {
  tv1::Frame f;
  f.set_exchange(id);
  f.set_body(std::string(n, c));
  return f;
}
tv1::Frame head(std::uint64_t id) {
  tv1::Frame f;
  f.set_exchange(id);
  f.mutable_response_head()->set_status(200);
  return f;
}

std::vector<std::uint64_t> ids(const tv1::LaneMessage& m) {
  std::vector<std::uint64_t> out;
  for (const auto& f : m.frames()) out.push_back(f.exchange());
  return out;
}

TEST(TunnelScheduler, KeepsEachExchangesOrder) {
  Scheduler s;
  s.push(head(1));
  s.push(piece(1, 10, 'a'));
  s.push(end_frame(1));
  EXPECT_EQ(s.frames(), 3u);
  tv1::LaneMessage m;
  s.take(m);
  ASSERT_EQ(m.frames_size(), 3) << "a head, one piece and the end go together";
  EXPECT_TRUE(m.frames(0).has_response_head());
  EXPECT_EQ(m.frames(1).body(), std::string(10, 'a'));
  EXPECT_TRUE(m.frames(2).has_end());
  EXPECT_TRUE(s.empty());
  EXPECT_EQ(s.frames(), 0u);
}

// A bulk transfer with many pieces queued, and a small exchange queued
// after them: the small one goes in the first message, behind at most one
// piece of the bulk one.
TEST(TunnelScheduler, ASmallExchangeWaitsBehindAtMostOnePieceOfABulkOne) {
  Scheduler s;
  for (int i = 0; i < 16; ++i) s.push(piece(1, kBodyPieceBytes));
  s.push(head(2));
  s.push(piece(2, 100));
  s.push(end_frame(2));
  tv1::LaneMessage m;
  s.take(m);
  const auto order = ids(m);
  ASSERT_GE(order.size(), 4u);
  EXPECT_EQ(order[0], 1u);
  EXPECT_EQ(order[1], 2u);
  EXPECT_EQ(order[2], 2u);
  EXPECT_EQ(order[3], 2u);
  EXPECT_LE(m.ByteSizeLong(), kBatchBytes + kBodyPieceBytes);
}

// Pieces are taken in turn, one per exchange per round.
TEST(TunnelScheduler, RoundRobinAcrossExchanges) {
  Scheduler s;
  for (int i = 0; i < 3; ++i) {
    s.push(piece(1, 10));
    s.push(piece(2, 10));
  }
  s.push(piece(3, 10));
  tv1::LaneMessage m;
  s.take(m);
  EXPECT_EQ(ids(m), (std::vector<std::uint64_t>{1, 2, 3, 1, 2, 1, 2}));
}

// A message holds at most kBatchBytes (a single frame always goes); the
// rest waits for the next, with its turn kept.
TEST(TunnelScheduler, MessagesAreBoundedAndTheTurnCarriesOver) {
  Scheduler s;
  for (int i = 0; i < 6; ++i) s.push(piece(1, kBodyPieceBytes));
  tv1::LaneMessage m;
  s.take(m);
  EXPECT_EQ(m.frames_size(), 3) << "1 MiB holds three 256 KiB pieces with their framing";
  EXPECT_EQ(s.frames(), 3u);
  tv1::LaneMessage big;
  Scheduler one;
  one.push(piece(9, 3 * kBatchBytes));
  one.take(big);
  EXPECT_EQ(big.frames_size(), 1) << "a frame larger than the bound still goes";
}

TEST(TunnelScheduler, DropForgetsACutExchange) {
  Scheduler s;
  s.push(piece(1, 10));
  s.push(piece(1, 10));
  s.push(piece(2, 10));
  s.drop(1);
  EXPECT_EQ(s.frames(), 1u);
  tv1::LaneMessage m;
  s.take(m);
  EXPECT_EQ(ids(m), (std::vector<std::uint64_t>{2}));
  s.drop(42);  // nothing queued: harmless
  EXPECT_TRUE(s.empty());
}

}  // namespace
}  // namespace postern::tunnel
