#include "common/grpc/frames.hpp"

#include <gtest/gtest.h>

namespace postern::grpc_bridge {
namespace {

namespace tv1 = tunnel::v1;

tv1::Frame body(const std::string& data) {
  tv1::Frame f;
  f.mutable_body()->set_data(data);
  return f;
}

TEST(FrameBatch, GathersFramesIntoOneMessageInOrder) {
  FrameBatch b;
  EXPECT_TRUE(b.empty());
  tv1::Frame head;
  head.mutable_response_head()->set_status(200);
  b.add(std::move(head));
  b.add(body("hello"));
  tv1::Frame end;
  end.mutable_end();
  b.add(std::move(end));
  EXPECT_FALSE(b.empty());
  EXPECT_EQ(b.payload_bytes(), 5u);
  const auto& m = b.message();
  EXPECT_TRUE(m.has_response_head());
  ASSERT_EQ(m.then_size(), 2);
  EXPECT_EQ(m.then(0).body().data(), "hello");
  EXPECT_TRUE(m.then(1).has_end());
  b.clear();
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(b.payload_bytes(), 0u);
  b.add(body("x"));
  EXPECT_EQ(b.message().then_size(), 0) << "a cleared batch starts over";
  EXPECT_TRUE(b.message().has_body());
}

TEST(SplitFrames, LeavesOneFrameAndQueuesTheRestInOrder) {
  tv1::Frame f;
  f.mutable_request_head()->set_method("GET");
  *f.add_then() = body("a");
  f.add_then()->mutable_end();
  std::vector<tv1::Frame> rest;
  split_frames(f, rest);
  EXPECT_TRUE(f.has_request_head());
  EXPECT_EQ(f.then_size(), 0);
  ASSERT_EQ(rest.size(), 2u);
  EXPECT_EQ(rest[0].body().data(), "a");
  EXPECT_TRUE(rest[1].has_end());
}

TEST(SplitFrames, FlattensNestedFramesDepthFirst) {
  // Postern never nests; a peer that does still yields one sequence.
  tv1::Frame f = body("1");
  tv1::Frame second = body("2");
  *second.add_then() = body("3");
  *f.add_then() = std::move(second);
  *f.add_then() = body("4");
  std::vector<tv1::Frame> rest;
  split_frames(f, rest);
  EXPECT_EQ(f.body().data(), "1");
  ASSERT_EQ(rest.size(), 3u);
  EXPECT_EQ(rest[0].body().data(), "2");
  EXPECT_EQ(rest[0].then_size(), 0);
  EXPECT_EQ(rest[1].body().data(), "3");
  EXPECT_EQ(rest[2].body().data(), "4");
}

TEST(SplitFrames, SingleFrameIsLeftAlone) {
  tv1::Frame f = body("only");
  std::vector<tv1::Frame> rest;
  split_frames(f, rest);
  EXPECT_TRUE(rest.empty());
  EXPECT_EQ(f.body().data(), "only");
}

}  // namespace
}  // namespace postern::grpc_bridge
