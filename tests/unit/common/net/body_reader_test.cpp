#include "common/net/body_reader.hpp"

#include <gtest/gtest.h>

namespace postern::net {
namespace {

TEST(PieceBuffer, StartsSmallAndDoublesWhileBodiesFillIt) {
  PieceBuffer b;
  b.prepare();
  EXPECT_EQ(b.capacity(), kWsPieceBytes);
  b.got(100);  // a piece that was not full: no growth
  b.prepare();
  EXPECT_EQ(b.capacity(), kWsPieceBytes);
  std::size_t steps = 0;
  while (b.capacity() < kChunkBytes) {
    b.got(b.capacity());
    b.prepare();
    ++steps;
    ASSERT_LT(steps, 10u);
  }
  EXPECT_EQ(b.capacity(), kChunkBytes);
  b.got(b.capacity());
  b.prepare();
  EXPECT_EQ(b.capacity(), kChunkBytes) << "never past the largest piece";
}

TEST(PieceBuffer, RoomIsWritableAtItsCapacity) {
  PieceBuffer b;
  char* room = b.prepare();
  room[0] = 'a';
  room[b.capacity() - 1] = 'z';
  EXPECT_EQ(room[0], 'a');
}

}  // namespace
}  // namespace postern::net
