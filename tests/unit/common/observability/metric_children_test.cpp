#include "common/observability/metric_children.hpp"

#include <gtest/gtest.h>
#include <prometheus/counter.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

namespace postern::observability {
namespace {

TEST(MetricChildren, TheSameValuesFindTheSameChildOfTheFamily) {
  prometheus::Registry registry;
  auto& family = prometheus::BuildCounter().Name("t_requests_total").Help("h").Register(registry);
  MetricChildren<prometheus::Counter> children(family, {"api", "code"});
  children.get({"orders", "200"}).Increment();
  children.get({"orders", "200"}).Increment();
  children.get({"orders", "404"}).Increment();
  EXPECT_EQ(&children.get({"orders", "200"}), &family.Add({{"api", "orders"}, {"code", "200"}}));
  EXPECT_EQ(family.Add({{"api", "orders"}, {"code", "200"}}).Value(), 2);
  EXPECT_EQ(family.Add({{"api", "orders"}, {"code", "404"}}).Value(), 1);
}

TEST(MetricChildren, ValuesThatJoinAlikeStayApart) {
  prometheus::Registry registry;
  auto& family = prometheus::BuildCounter().Name("t_total").Help("h").Register(registry);
  MetricChildren<prometheus::Counter> children(family, {"a", "b"});
  children.get({"ab", ""}).Increment();
  children.get({"a", "b"}).Increment(5);
  // Values that hold the separator a naive join would use.
  using namespace std::string_view_literals;
  children.get({"x\0"sv, "y"}).Increment(7);
  children.get({"x"sv, "\0y"sv}).Increment(11);
  children.get({"1:x"sv, "y"}).Increment(13);
  children.get({"1"sv, "x1:y"sv}).Increment(17);
  EXPECT_EQ(family.Add({{"a", "ab"}, {"b", ""}}).Value(), 1);
  EXPECT_EQ(family.Add({{"a", "a"}, {"b", "b"}}).Value(), 5);
  EXPECT_EQ(family.Add({{"a", std::string("x\0", 2)}, {"b", "y"}}).Value(), 7);
  EXPECT_EQ(family.Add({{"a", "x"}, {"b", std::string("\0y", 2)}}).Value(), 11);
  EXPECT_EQ(family.Add({{"a", "1:x"}, {"b", "y"}}).Value(), 13);
  EXPECT_EQ(family.Add({{"a", "1"}, {"b", "x1:y"}}).Value(), 17);
}

TEST(MetricChildren, AHistogramGetsItsBucketsWhenNew) {
  prometheus::Registry registry;
  auto& family = prometheus::BuildHistogram().Name("t_seconds").Help("h").Register(registry);
  MetricChildren<prometheus::Histogram> children(family, {"api"});
  const prometheus::Histogram::BucketBoundaries buckets{0.1, 1};
  children.get({"orders"}, buckets).Observe(0.5);
  children.get({"orders"}, buckets).Observe(5);
  const auto m = family.Add({{"api", "orders"}}, buckets).Collect().histogram;
  EXPECT_EQ(m.sample_count, 2u);
  ASSERT_EQ(m.bucket.size(), 3u);
  EXPECT_EQ(m.bucket[1].cumulative_count, 1u);
}

}  // namespace
}  // namespace postern::observability
