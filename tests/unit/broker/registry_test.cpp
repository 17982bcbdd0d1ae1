#include "broker/registry.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <vector>

namespace postern::broker {
namespace {

struct FakeLane : SessionLane {
  bool up = true;
  bool usable() const override { return up; }
};

TEST(Registry, PicksTheLeastLoadedSessionAndItsLeastBusyLane) {
  Registry r;
  auto a = r.add("a", "id-a", {"demo"});
  auto b = r.add("b", "id-b", {"demo", "x"});
  FakeLane a1, a2, b1;
  ASSERT_TRUE(r.add_lane(a, &a1));
  ASSERT_TRUE(r.add_lane(a, &a2));
  ASSERT_TRUE(r.add_lane(b, &b1));
  auto p1 = r.pick("demo");
  ASSERT_TRUE(p1);
  auto p2 = r.pick("demo");
  ASSERT_TRUE(p2);
  EXPECT_NE(p1.session, p2.session) << "second exchange goes to the idle session";
  EXPECT_EQ(r.in_flight(), 2u);
  // Two more: each session gets one, a's on its other lane.
  auto p3 = r.pick("demo");
  auto p4 = r.pick("demo");
  ASSERT_TRUE(p3 && p4);
  EXPECT_EQ(a1.in_flight, 1u);
  EXPECT_EQ(a2.in_flight, 1u);
  EXPECT_EQ(b1.in_flight, 2u);
  r.finished(p1);
  EXPECT_EQ(r.in_flight(), 3u);
  EXPECT_FALSE(r.pick("nobody"));
  EXPECT_TRUE(r.serves("x"));
  EXPECT_FALSE(r.serves("nobody"));
}

TEST(Registry, IdleSessionsTakeTurns) {
  Registry r;
  auto a = r.add("a", "id-a", {"demo"});
  auto b = r.add("b", "id-b", {"demo"});
  FakeLane la, lb;
  r.add_lane(a, &la);
  r.add_lane(b, &lb);
  int to_a = 0;
  for (int i = 0; i < 4; ++i) {
    auto p = r.pick("demo");
    ASSERT_TRUE(p);
    to_a += p.session == a;
    r.finished(p);
  }
  EXPECT_EQ(to_a, 2);
}

// A lane that cannot take exchanges (ended, or draining) is skipped; a
// session with no usable lane is not picked even though it serves the
// alias (the exchange waits for a lane instead).
TEST(Registry, OnlyUsableLanesArePicked) {
  Registry r;
  auto a = r.add("a", "id-a", {"demo"});
  FakeLane l1, l2;
  r.add_lane(a, &l1);
  r.add_lane(a, &l2);
  l1.up = false;
  auto p = r.pick("demo");
  ASSERT_TRUE(p);
  EXPECT_EQ(p.lane, &l2);
  l2.up = false;
  EXPECT_FALSE(r.pick("demo"));
  EXPECT_TRUE(r.serves("demo"));
  r.remove_lane(a, &l2);
  r.finished(p);  // the lane object outlives its exchanges
  EXPECT_EQ(l2.in_flight, 0u);
}

TEST(Registry, DrainingAndRemovedSessionsTakeNoLanesOrExchanges) {
  Registry r;
  auto a = r.add("a", "id-a", {"demo"});
  FakeLane l1, l2;
  r.add_lane(a, &l1);
  r.drain(a);
  EXPECT_FALSE(r.add_lane(a, &l2)) << "a draining session takes no new lanes";
  EXPECT_FALSE(r.serves("demo"));
  EXPECT_FALSE(r.pick("demo"));
  auto b = r.add("b", "id-b", {"demo"});
  FakeLane l3;
  r.add_lane(b, &l3);
  r.remove(b);
  EXPECT_FALSE(r.pick("demo"));
  EXPECT_FALSE(r.add_lane(b, &l2));
  EXPECT_EQ(r.find(b->id), nullptr);
}

TEST(Registry, ALaneWakesWaitersForThatAliasOnly) {
  Registry r;
  int woke_demo = 0, woke_x = 0;
  r.add_waiter("demo", [&] { ++woke_demo; });
  r.add_waiter("x", [&] { ++woke_x; });
  auto a = r.add("a", "id", {"demo"});
  FakeLane l;
  r.add_lane(a, &l);
  EXPECT_EQ(woke_demo, 1);
  EXPECT_EQ(woke_x, 0);
  EXPECT_EQ(r.connectors_per_alias().at("demo"), 1u);
}

// Session ids are bearer secrets: 128 random bits, distinct; labels are
// what logs show.
TEST(Registry, SessionIdsAreRandomAndLabelsCount) {
  Registry r;
  auto a = r.add("a", "id-a", {"demo"});
  auto b = r.add("b", "id-b", {"demo"});
  EXPECT_EQ(a->id.size(), 32u);
  EXPECT_NE(a->id, b->id);
  EXPECT_EQ(a->label, "s1");
  EXPECT_EQ(b->label, "s2");
  EXPECT_EQ(r.find(a->id), a);
}

// A request waiting for a stream learns at once when the sessions serving
// its alias drain or go (it is refused then, not when its wait runs out);
// waiters for other aliases sleep on. A draining broker wakes them all.
TEST(Registry, DrainRemoveAndWakeAllWakeWaiters) {
  Registry r;
  auto a = r.add("a", "id-a", {"demo"});
  auto b = r.add("b", "id-b", {"demo", "x"});
  int woke_demo = 0, woke_x = 0, woke_other = 0;
  r.add_waiter("demo", [&] { ++woke_demo; });
  r.add_waiter("other", [&] { ++woke_other; });
  r.drain(a);
  EXPECT_EQ(woke_demo, 1);
  EXPECT_EQ(woke_other, 0);
  r.add_waiter("x", [&] { ++woke_x; });
  r.remove(b);
  EXPECT_EQ(woke_x, 1);
  EXPECT_EQ(woke_demo, 1) << "a waiter runs once";
  EXPECT_EQ(woke_other, 0);
  r.wake_all();
  EXPECT_EQ(woke_other, 1);
  r.wake_all();
  EXPECT_EQ(woke_other, 1) << "woken waiters are removed";
}

// lost_at: when an alias' last serving session drained or went, while none
// serves it; not while another still does, and not for an alias nobody
// ever served. A session that drains and then goes counts from the drain.
TEST(Registry, LostAtIsWhenTheLastSessionForAnAliasStoppedServingIt) {
  using Clock = std::chrono::steady_clock;
  Registry r;
  EXPECT_FALSE(r.lost_at("demo").has_value());
  auto a = r.add("a", "id-a", {"demo"});
  auto b = r.add("b", "id-b", {"demo", "x"});
  r.drain(a);
  EXPECT_FALSE(r.lost_at("demo").has_value()) << "b still serves it";
  const auto before = Clock::now();
  r.drain(b);
  const auto after = Clock::now();
  ASSERT_TRUE(r.lost_at("demo").has_value());
  EXPECT_GE(*r.lost_at("demo"), before);
  EXPECT_LE(*r.lost_at("demo"), after);
  ASSERT_TRUE(r.lost_at("x").has_value());
  const auto drained = *r.lost_at("x");
  r.remove(b);
  EXPECT_EQ(r.lost_at("x"), drained) << "the drain was when it stopped serving";
  EXPECT_FALSE(r.lost_at("other").has_value());
  auto c = r.add("c", "id-c", {"demo"});
  EXPECT_FALSE(r.lost_at("demo").has_value()) << "served again";
  EXPECT_TRUE(r.lost_at("x").has_value());
}

}  // namespace
}  // namespace postern::broker
