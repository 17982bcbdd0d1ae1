#include "broker/exchange_router.hpp"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include "common/tunnel/endpoint.hpp"
#include "support/memory_lane.hpp"

namespace postern::broker {
namespace {

using namespace std::chrono_literals;
namespace tv1 = tunnel::v1;

// A broker's router between an edge (an opener Endpoint) and a connector (an
// acceptor Endpoint that keeps what it is given), each on an in-memory lane.
struct Hops {
  asio::io_context io;
  Registry registry;
  ExchangeRouter router{io.get_executor(), registry, ExchangeRouter::Options{.park_wait = 200ms}, RouterMetrics{}};
  std::shared_ptr<tunnel::Endpoint> edge, connector;
  std::unique_ptr<BrokerLane> edge_side, connector_side;
  std::shared_ptr<Session> session;
  std::vector<std::pair<std::shared_ptr<tunnel::Exchange>, tv1::RequestHead>> accepted;

  Hops() {
    auto [e, be] = testing::memory_lane_pair(io.get_executor());
    edge = std::make_shared<tunnel::Endpoint>(io.get_executor(), std::move(e), tunnel::Endpoint::Options{});
    edge_side = std::make_unique<BrokerLane>(router, BrokerLane::Side::edge, std::move(be), "edge-1");
    asio::co_spawn(io, edge->run(), asio::detached);
    asio::co_spawn(io, edge_side->run(), asio::detached);
  }
  // A connector for `alias` attaches with one lane.
  void attach(const std::string& alias = "demo") {
    session = registry.add("green-1", "spiffe://green", {alias});
    auto [c, bc] = testing::memory_lane_pair(io.get_executor());
    connector = std::make_shared<tunnel::Endpoint>(io.get_executor(), std::move(c), tunnel::Endpoint::Options{},
                                                   [this](std::shared_ptr<tunnel::Exchange> x, tv1::RequestHead&& h) {
                                                     accepted.emplace_back(std::move(x), std::move(h));
                                                   });
    connector_side = std::make_unique<BrokerLane>(router, BrokerLane::Side::connector, std::move(bc), "green-1",
                                                  session);
    registry.add_lane(session, connector_side.get());
    asio::co_spawn(io, connector->run(), asio::detached);
    asio::co_spawn(io, connector_side->run(), asio::detached);
  }
  void run(std::chrono::milliseconds d = 20ms) {
    io.run_for(d);
    io.restart();
  }
  std::shared_ptr<tunnel::Exchange> open(const std::string& alias = "demo", const std::string& api = "") {
    tv1::RequestHead h;
    h.set_alias(alias);
    h.set_api(api);
    h.set_method("GET");
    h.set_target("/x");
    h.set_request_id("r-" + std::to_string(++requests));
    auto x = edge->open(h);
    x->send(tunnel::end_frame(0));
    return x;
  }
  // The frames the edge has for `x` so far (credit frames left out).
  std::vector<tv1::Frame> frames(tunnel::Exchange& x) {
    std::vector<tv1::Frame> out;
    while (x.ready()) {
      tv1::Frame f;
      bool got = false;
      asio::co_spawn(
          io, [&]() -> asio::awaitable<void> { got = co_await x.next(f); }, asio::detached);
      run(1ms);
      if (!got) break;
      if (!f.has_credit()) out.push_back(std::move(f));
    }
    return out;
  }
  int requests = 0;
};

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

TEST(ExchangeRouter, RoutesAnExchangeToTheConnectorAndBack) {
  Hops h;
  h.attach();
  h.run();
  auto x = h.open();
  h.run();
  ASSERT_EQ(h.accepted.size(), 1u);
  EXPECT_EQ(h.accepted[0].second.request_id(), "r-1");
  auto& y = *h.accepted[0].first;
  y.send(response_head(200));
  y.send(body("hello"));
  y.send(tunnel::end_frame(0));
  h.run();
  const auto got = h.frames(*x);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].response_head().status(), 200u);
  EXPECT_EQ(got[1].body(), "hello");
  EXPECT_TRUE(got[2].has_end());
  EXPECT_EQ(h.router.in_flight(), 0u);
  EXPECT_TRUE(h.router.idle().is_set());
}

// No connector for the alias and none expected soon after the wait: the
// edge gets NO_CONNECTOR naming the API the client called, never the alias
// (an internal name the client reads in the error body).
TEST(ExchangeRouter, NoConnectorIsRefusedNamingTheApiNotTheAlias) {
  Hops h;
  auto x = h.open("ghost", "orders");
  h.run(300ms);
  const auto got = h.frames(*x);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].error().code(), tv1::ERROR_CODE_NO_CONNECTOR);
  EXPECT_NE(got[0].error().message().find("API 'orders'"), std::string::npos) << got[0].error().message();
  EXPECT_EQ(got[0].error().message().find("ghost"), std::string::npos) << got[0].error().message();
}

// An exchange waits for a connector that attaches within its wait.
TEST(ExchangeRouter, AnExchangeWaitsForALaneThatComes) {
  Hops h;
  h.registry.add("green-0", "spiffe://green", {"demo"});  // attached, no lane yet
  auto x = h.open();
  h.run(50ms);
  EXPECT_TRUE(h.accepted.empty());
  h.attach();
  h.run();
  EXPECT_EQ(h.accepted.size(), 1u);
}

// A connector breaking the order ends that exchange both ways with
// UPSTREAM_PROTOCOL; the lanes carry on and the next exchange goes through.
TEST(ExchangeRouter, AViolationEndsItsExchangeNotTheLane) {
  Hops h;
  h.attach();
  h.run();
  auto x = h.open();
  h.run();
  ASSERT_EQ(h.accepted.size(), 1u);
  auto y = h.accepted[0].first;
  y->send(body("before any head"));
  h.run();
  auto got = h.frames(*x);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].error().code(), tv1::ERROR_CODE_UPSTREAM_PROTOCOL);
  EXPECT_NE(got[0].error().message().find("connector 'green-1' broke the tunnel protocol: a body frame before the "
                                          "response head"),
            std::string::npos)
      << got[0].error().message();
  EXPECT_TRUE(y->over()) << "the connector was told too";
  auto x2 = h.open();
  h.run();
  ASSERT_EQ(h.accepted.size(), 2u);
  h.accepted[1].first->send(response_head(204));
  h.accepted[1].first->send(tunnel::end_frame(0));
  h.run();
  got = h.frames(*x2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].response_head().status(), 204u);
  EXPECT_FALSE(h.edge->over());
  EXPECT_FALSE(h.connector->over());
}

// A connector sending past its credit is cut (the broker would otherwise
// queue what the edge never asked for).
TEST(ExchangeRouter, PiecesPastTheCreditAreAViolation) {
  Hops h;
  h.attach();
  h.run();
  tv1::RequestHead head;
  head.set_alias("demo");
  head.set_method("GET");
  head.set_target("/big");
  // An edge that grants nothing: a raw frame on its lane, no window.
  tv1::Frame f;
  f.set_exchange(99);
  *f.mutable_request_head() = head;
  h.edge->lane().send(std::move(f));
  h.edge->lane().send(tunnel::end_frame(99));
  h.run();
  ASSERT_EQ(h.accepted.size(), 1u);
  auto y = h.accepted[0].first;
  y->send(response_head(200));
  for (int i = 0; i < 5; ++i) y->send(body(std::string(16u << 10, 'x')));
  h.run();
  EXPECT_TRUE(y->over());
  EXPECT_EQ(h.router.in_flight(), 0u);
}

// A connector lane that ends fails only its exchanges: the edge gets
// CONNECTOR_LOST at once, and its lane carries on.
TEST(ExchangeRouter, AConnectorLaneThatEndsFailsItsExchangesFast) {
  Hops h;
  h.attach();
  h.run();
  auto x = h.open();
  h.run();
  ASSERT_EQ(h.accepted.size(), 1u);
  h.connector->lane().abort();
  h.run();
  const auto got = h.frames(*x);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].error().code(), tv1::ERROR_CODE_CONNECTOR_LOST);
  EXPECT_FALSE(h.edge->over());
  EXPECT_EQ(h.router.in_flight(), 0u);
}

// The edge letting go of an exchange tells the connector (CLIENT_GONE).
TEST(ExchangeRouter, TheEdgeGivingUpReachesTheConnector) {
  Hops h;
  h.attach();
  h.run();
  auto x = h.open();
  h.run();
  ASSERT_EQ(h.accepted.size(), 1u);
  x.reset();
  h.run();
  auto& y = *h.accepted[0].first;
  EXPECT_TRUE(y.over());
  EXPECT_EQ(h.router.in_flight(), 0u);
}

// A draining router refuses new exchanges with DRAINING and marks the edge
// lane; exchanges under way finish.
TEST(ExchangeRouter, DrainRefusesNewExchangesAndFinishesTheRest) {
  Hops h;
  h.attach();
  h.run();
  auto x = h.open();
  h.run();
  ASSERT_EQ(h.accepted.size(), 1u);
  h.router.drain();
  h.run();
  EXPECT_TRUE(h.edge->draining());
  auto refused = h.open();
  h.run();
  auto got = h.frames(*refused);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].error().code(), tv1::ERROR_CODE_DRAINING);
  h.accepted[0].first->send(response_head(200));
  h.accepted[0].first->send(tunnel::end_frame(0));
  h.run();
  got = h.frames(*x);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_TRUE(got[1].has_end());
  EXPECT_TRUE(h.router.idle().is_set());
}

// A WebSocket upgrade: after the connector's 101 messages pass both ways,
// and the session ends with each side's close.
TEST(ExchangeRouter, AWebSocketSessionCrossesAfterThe101) {
  Hops h;
  h.attach();
  h.run();
  tv1::RequestHead head;
  head.set_alias("demo");
  head.set_method("GET");
  head.set_target("/chat");
  head.set_websocket(true);
  auto x = h.edge->open(head);  // an upgrade has no body: no end either
  h.run();
  ASSERT_EQ(h.accepted.size(), 1u);
  auto y = h.accepted[0].first;
  y->send(response_head(101));
  tv1::Frame hello;
  hello.mutable_ws_message()->set_data("from the server");
  hello.mutable_ws_message()->set_last(true);
  y->send(std::move(hello));
  h.run();
  auto got = h.frames(*x);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].response_head().status(), 101u);
  EXPECT_EQ(got[1].ws_message().data(), "from the server");
  tv1::Frame up;
  up.mutable_ws_message()->set_data("from the client");
  up.mutable_ws_message()->set_last(true);
  x->send(std::move(up));
  tv1::Frame close;
  close.mutable_ws_close()->set_code(1000);
  x->send(tv1::Frame(close));
  h.run();
  got = h.frames(*y);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].ws_message().data(), "from the client");
  EXPECT_TRUE(got.back().has_ws_close());
  y->send(tv1::Frame(close));
  h.run();
  EXPECT_EQ(h.router.in_flight(), 0u) << "both closes end the session";
}

}  // namespace
}  // namespace postern::broker
