#include "common/tunnel/frames.hpp"

#include <gtest/gtest.h>

namespace postern::tunnel {
namespace {

tv1::Frame request_head(bool websocket = false) {
  tv1::Frame f;
  f.mutable_request_head()->set_method("GET");
  f.mutable_request_head()->set_websocket(websocket);
  return f;
}
tv1::Frame response_head(unsigned status) {
  tv1::Frame f;
  f.mutable_response_head()->set_status(status);
  return f;
}
tv1::Frame body(const std::string& data) {
  tv1::Frame f;
  f.set_body(data);
  return f;
}
tv1::Frame ws(const std::string& data) {
  tv1::Frame f;
  f.mutable_ws_message()->set_data(data);
  f.mutable_ws_message()->set_last(true);
  return f;
}
tv1::Frame ws_close() {
  tv1::Frame f;
  f.mutable_ws_close()->set_code(1000);
  return f;
}

TEST(TunnelFrames, BuildersAndNames) {
  const auto e = error_frame(7, tv1::ERROR_CODE_DRAINING, "broker is draining");
  EXPECT_EQ(e.exchange(), 7u);
  EXPECT_EQ(e.error().code(), tv1::ERROR_CODE_DRAINING);
  EXPECT_EQ(frame_kind(e), "error");
  EXPECT_EQ(credit_frame(3, 100).credit(), 100u);
  EXPECT_TRUE(end_frame(3).has_end());
  EXPECT_EQ(frame_kind(response_head(200)), "response_head");
  EXPECT_EQ(frame_kind(tv1::Frame()), "empty");
  EXPECT_EQ(data_bytes(body("hello")), 5u);
  EXPECT_EQ(data_bytes(ws("abc")), 3u);
  EXPECT_EQ(data_bytes(credit_frame(1, 9)), 0u);
}

TEST(TunnelFrames, RequestDirectionInOrder) {
  Direction d(Direction::Side::request);
  EXPECT_FALSE(d.started());
  EXPECT_EQ(d.accept(request_head()), "");
  EXPECT_EQ(d.accept(credit_frame(1, 10)), "") << "credit may come at any point";
  EXPECT_EQ(d.accept(body("a")), "");
  EXPECT_EQ(d.accept(body("b")), "");
  EXPECT_EQ(d.accept(end_frame(1)), "");
  EXPECT_TRUE(d.ended());
  EXPECT_EQ(d.accept(credit_frame(1, 10)), "") << "a late credit is harmless";
  EXPECT_EQ(d.accept(body("late")), "a body frame after the request's end");
  EXPECT_EQ(d.accept(error_frame(1, tv1::ERROR_CODE_CLIENT_GONE, "gone")), "")
      << "an error after the end lets go of the response";
}

TEST(TunnelFrames, ResponseDirectionNamesWhatIsOutOfOrder) {
  {
    Direction d(Direction::Side::response);
    EXPECT_EQ(d.accept(body("early")), "a body frame before the response head");
  }
  {
    Direction d(Direction::Side::response);
    EXPECT_EQ(d.accept(end_frame(1)), "a end frame before the response head");
  }
  {
    Direction d(Direction::Side::response);
    EXPECT_EQ(d.accept(response_head(200)), "");
    EXPECT_EQ(d.accept(body("one")), "");
    EXPECT_EQ(d.accept(response_head(200)), "a second response head");
  }
  {
    Direction d(Direction::Side::response);
    EXPECT_EQ(d.accept(response_head(200)), "");
    EXPECT_EQ(d.accept(ws("x")), "a ws_message frame in a response body");
  }
  {
    Direction d(Direction::Side::request);
    EXPECT_EQ(d.accept(request_head()), "");
    EXPECT_EQ(d.accept(request_head()), "a second request head");
  }
}

TEST(TunnelFrames, AnErrorEndsADirectionAnywhere) {
  Direction d(Direction::Side::response);
  EXPECT_EQ(d.accept(error_frame(1, tv1::ERROR_CODE_INTERNAL, "x")), "");
  EXPECT_TRUE(d.ended());
  EXPECT_NE(d.accept(response_head(200)), "");
}

// A WebSocket request: no messages before the 101; after it, messages both
// ways until each side's close.
TEST(TunnelFrames, WebSocketMessagesOnlyAfterThe101) {
  Direction req(Direction::Side::request);
  Direction resp(Direction::Side::response);
  EXPECT_EQ(req.accept(request_head(true)), "");
  EXPECT_TRUE(req.websocket());
  resp.set_websocket(true);
  EXPECT_EQ(req.accept(ws("too soon")), "a ws_message frame before the 101");
  EXPECT_EQ(resp.accept(response_head(101)), "");
  EXPECT_TRUE(resp.upgraded());
  req.upgrade();
  EXPECT_EQ(req.accept(ws("hi")), "");
  EXPECT_EQ(resp.accept(ws("hello")), "");
  EXPECT_EQ(resp.accept(body("x")), "a body frame in a WebSocket session");
  EXPECT_EQ(req.accept(ws_close()), "");
  EXPECT_TRUE(req.ended());
  EXPECT_EQ(resp.accept(ws_close()), "");
  EXPECT_TRUE(resp.ended());
}

TEST(TunnelFrames, ARefusedUpgradeIsAnOrdinaryResponse) {
  Direction req(Direction::Side::request);
  Direction resp(Direction::Side::response);
  EXPECT_EQ(req.accept(request_head(true)), "");
  EXPECT_EQ(req.accept(end_frame(1)), "") << "an upgrade request's empty body";
  resp.set_websocket(true);
  EXPECT_EQ(resp.accept(response_head(403)), "");
  EXPECT_FALSE(resp.upgraded());
  EXPECT_EQ(resp.accept(body("no")), "");
  EXPECT_EQ(resp.accept(end_frame(1)), "");
  EXPECT_TRUE(resp.ended());
}

}  // namespace
}  // namespace postern::tunnel
