#include "broker/registry.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <vector>

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

// After a burst, trim hands back the streams beyond pool_size that nothing
// took since `idle_before`, oldest first; it keeps pool_size of them, keeps
// those parked since, and leaves a session without a pool_size alone.
TEST(Registry, TrimEndsOnlyIdleStreamsBeyondThePoolOldestFirst) {
  using Clock = std::chrono::steady_clock;
  Registry r;
  auto a = r.add("a", "id-a", {"demo"});
  a->pool_size = 2;
  auto unlimited = r.add("u", "id-u", {"other"});
  std::vector<FakeSlot> slots(5), more(4);
  for (auto& s : slots) ASSERT_TRUE(r.park(a, &s));
  for (auto& s : more) ASSERT_TRUE(r.park(unlimited, &s));
  const auto now = Clock::now();
  // The first two were parked a minute ago, the others just now.
  slots[0].parked_at = slots[1].parked_at = now - std::chrono::minutes(1);

  EXPECT_TRUE(r.trim(now - std::chrono::hours(1)).empty()) << "nothing idle that long";
  // The oldest stream is taken for an exchange. Of the four left, two are
  // beyond the pool, and only the older of them has been idle long enough.
  auto pick = r.take("demo");
  ASSERT_EQ(pick.slot, &slots[0]);
  auto trimmed = r.trim(now - std::chrono::seconds(2));
  ASSERT_EQ(trimmed.size(), 1u);
  EXPECT_EQ(trimmed[0], &slots[1]);
  EXPECT_FALSE(slots[1].cancelled) << "the caller ends what trim returns";
  EXPECT_EQ(r.parked_per_alias().at("demo"), 3u);
  // Later: the next oldest goes; pool_size streams stay, however idle.
  trimmed = r.trim(now + std::chrono::hours(1));
  ASSERT_EQ(trimmed.size(), 1u);
  EXPECT_EQ(trimmed[0], &slots[2]);
  EXPECT_EQ(r.parked_per_alias().at("demo"), 2u);
  EXPECT_TRUE(r.trim(now + std::chrono::hours(2)).empty());
  EXPECT_EQ(r.parked_per_alias().at("other"), 4u) << "no pool_size: never trimmed";
}

}  // namespace
}  // namespace postern::broker
