#include "broker/registry.hpp"

#include <gtest/gtest.h>

namespace postern::broker {
namespace {

struct FakeSlot : PullSlot {
  bool cancelled = false;
  void cancel() override { cancelled = true; }
};

TEST(Registry, TakesFromTheLeastLoadedSession) {
  Registry r;
  auto a = r.add("a", "id-a", {"demo"});
  auto b = r.add("b", "id-b", {"demo", "x"});
  FakeSlot a1, a2, b1;
  ASSERT_TRUE(r.park(a, &a1));
  ASSERT_TRUE(r.park(a, &a2));
  ASSERT_TRUE(r.park(b, &b1));
  auto p1 = r.take("demo");
  ASSERT_TRUE(p1.slot);
  auto p2 = r.take("demo");
  ASSERT_TRUE(p2.slot);
  EXPECT_NE(p1.session, p2.session) << "second exchange goes to the idle session";
  EXPECT_EQ(r.in_flight(), 2u);
  r.finished(p1.session);
  EXPECT_EQ(r.in_flight(), 1u);
  EXPECT_FALSE(r.take("nobody").slot);
  EXPECT_TRUE(r.serves("x"));
  EXPECT_FALSE(r.serves("nobody"));
}

TEST(Registry, IdleSessionsTakeTurns) {
  Registry r;
  auto a = r.add("a", "id-a", {"demo"});
  auto b = r.add("b", "id-b", {"demo"});
  std::vector<FakeSlot> slots(8);
  for (int i = 0; i < 4; ++i) {
    r.park(a, &slots[i]);
    r.park(b, &slots[4 + i]);
  }
  int to_a = 0;
  for (int i = 0; i < 4; ++i) {
    auto p = r.take("demo");
    ASSERT_TRUE(p.slot);
    to_a += p.session == a;
    r.finished(p.session);
  }
  EXPECT_EQ(to_a, 2);
}

TEST(Registry, DrainAndRemoveCancelParkedStreams) {
  Registry r;
  auto a = r.add("a", "id-a", {"demo"});
  FakeSlot s1, s2;
  r.park(a, &s1);
  r.drain(a);
  EXPECT_TRUE(s1.cancelled);
  EXPECT_FALSE(r.park(a, &s2)) << "a draining session takes no new parked streams";
  EXPECT_FALSE(r.serves("demo"));
  auto b = r.add("b", "id-b", {"demo"});
  FakeSlot s3;
  r.park(b, &s3);
  r.remove(b);
  EXPECT_TRUE(s3.cancelled);
  EXPECT_FALSE(r.take("demo").slot);
}

TEST(Registry, ParkWakesWaitersForThatAliasOnly) {
  Registry r;
  int woke_demo = 0, woke_x = 0;
  r.add_waiter("demo", [&] { ++woke_demo; });
  r.add_waiter("x", [&] { ++woke_x; });
  auto a = r.add("a", "id", {"demo"});
  FakeSlot s;
  r.park(a, &s);
  EXPECT_EQ(woke_demo, 1);
  EXPECT_EQ(woke_x, 0);
  EXPECT_EQ(r.parked_per_alias().at("demo"), 1u);
  EXPECT_EQ(r.connectors_per_alias().at("demo"), 1u);
}

}  // namespace
}  // namespace postern::broker
