#include "common/net/ws_relay.hpp"

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>

#include <deque>
#include <vector>

#include "common/event.hpp"

namespace postern::net {
namespace {

using namespace std::chrono_literals;

// A port fed by the test: read() takes the next queued message (waiting for
// one), write() records what the relay sent.
class FakePort final : public WsPort {
 public:
  explicit FakePort(asio::any_io_executor ex) : ready_(ex) {}
  void feed(WsMessage m) {
    in_.push_back(std::move(m));
    ready_.set();
  }
  asio::awaitable<void> read(WsMessage& m) override {
    while (in_.empty() && !aborted_) {
      ready_.reset();
      co_await ready_.wait();
    }
    if (aborted_ && in_.empty()) {
      m = WsMessage::close(1006, "aborted");
      co_return;
    }
    m = std::move(in_.front());
    in_.pop_front();
  }
  asio::awaitable<bool> write(const WsMessage& m) override {
    if (m.is_close()) {
      if (closed_) co_return true;
      closed_ = true;
      // A well-behaved peer answers a close with its echo.
      if (echo_close_) feed(WsMessage::close(m.code, m.data));
    }
    out.push_back(m);
    co_return true;
  }
  void abort() override {
    aborted_ = true;
    ready_.set();
  }
  std::vector<WsMessage> out;
  bool echo_close_ = true;

 private:
  std::deque<WsMessage> in_;
  Event ready_;
  bool aborted_ = false, closed_ = false;
};

WsMessage text(std::string s) {
  WsMessage m;
  m.data = std::move(s);
  return m;
}

struct Upper final : WsHooks {
  asio::awaitable<bool> on_message(WsDirection dir, WsMessage& m) override {
    if (m.data == "drop") co_return false;
    if (m.data == "stop") throw WsStop{1011, "policy says stop"};
    if (dir == WsDirection::client_to_server) m.data = "up:" + m.data;
    co_return true;
  }
};

struct Session {
  asio::io_context io;
  FakePort client{io.get_executor()}, server{io.get_executor()};
  void go(WsHooks* hooks, WsRelayOptions o, const std::function<void(WsRelay&)>& during = {}) {
    WsRelay relay(io.get_executor(), client, server, hooks, o);
    bool done = false;
    asio::co_spawn(io, relay.run(), [&](std::exception_ptr) {
      done = true;
      io.stop();
    });
    if (during) during(relay);
    io.run_for(5s);
    ASSERT_TRUE(done);
    stats = relay.stats();
  }
  WsRelayStats stats;
};

TEST(WsRelay, MessagesBothWaysThenTheClientsCloseReachesTheServer) {
  Session r;
  r.client.feed(text("hello"));
  r.client.feed(WsMessage::close(4000, "bye"));
  Upper hooks;
  r.go(&hooks, {});
  ASSERT_EQ(r.server.out.size(), 2u);
  EXPECT_EQ(r.server.out[0].data, "up:hello");
  EXPECT_TRUE(r.server.out[1].is_close());
  EXPECT_EQ(r.server.out[1].code, 4000);
  EXPECT_EQ(r.server.out[1].data, "bye");
  EXPECT_EQ(r.stats.closed_by, "client");
  EXPECT_EQ(r.stats.client_close_code, 4000);
  // The server's echo of the close is not sent on to a client that closed.
  ASSERT_EQ(r.client.out.size(), 1u);
  EXPECT_EQ(r.client.out[0].code, 4000);

  Session s;
  s.server.feed(text("world"));
  s.server.feed(WsMessage::close(4001, "done"));
  s.go(&hooks, {});
  ASSERT_EQ(s.client.out.size(), 2u);
  EXPECT_EQ(s.client.out[0].data, "world");
  EXPECT_EQ(s.client.out[1].code, 4001);
  EXPECT_EQ(s.stats.closed_by, "server");
  EXPECT_EQ(r.stats.messages[0], 1u);
  EXPECT_EQ(r.stats.bytes[0], 5u);
  EXPECT_EQ(s.stats.messages[1], 1u);
}

TEST(WsRelay, ReservedCodesBecome1011OnTheWayOn) {
  for (std::uint16_t code : {1005, 1006, 1015, 999, 5000}) {
    Session r;
    r.server.feed(WsMessage::close(code, ""));
    r.go(nullptr, {});
    ASSERT_FALSE(r.client.out.empty());
    EXPECT_EQ(r.client.out.back().code, 1011) << code;
    EXPECT_EQ(r.stats.closed_by, "server");
  }
  Session ok;
  ok.server.feed(WsMessage::close(4999, "app"));
  ok.go(nullptr, {});
  EXPECT_EQ(ok.client.out.back().code, 4999);
}

TEST(WsRelay, HooksDropAndStop) {
  Session r;
  r.client.feed(text("drop"));
  r.client.feed(text("kept"));
  r.client.feed(text("stop"));
  Upper hooks;
  r.go(&hooks, {});
  ASSERT_GE(r.server.out.size(), 2u);
  EXPECT_EQ(r.server.out[0].data, "up:kept");
  EXPECT_EQ(r.server.out[1].code, 1011);
  EXPECT_EQ(r.client.out.back().code, 1011);
  EXPECT_EQ(r.client.out.back().data, "policy says stop");
  EXPECT_EQ(r.stats.closed_by, "gateway");
}

TEST(WsRelay, IdleTimeoutAndStopCloseBothSidesWith1001) {
  Session r;
  WsRelayOptions o;
  o.idle_timeout = 50ms;
  r.go(nullptr, o);
  EXPECT_EQ(r.client.out.back().code, 1001);
  EXPECT_EQ(r.server.out.back().data, "idle timeout");
  EXPECT_EQ(r.stats.closed_by, "gateway");

  Session d;
  d.go(nullptr, {}, [](WsRelay& relay) { relay.stop(1001, "draining"); });
  EXPECT_EQ(d.client.out.back().code, 1001);
  EXPECT_EQ(d.server.out.back().code, 1001);
}

TEST(WsRelay, APeerThatNeverAnswersTheCloseIsCutAfterTheCloseTimeout) {
  Session r;
  r.server.echo_close_ = false;
  r.client.echo_close_ = false;
  WsRelayOptions o;
  o.close_timeout = 50ms;
  r.client.feed(WsMessage::close(1000, ""));
  const auto t0 = std::chrono::steady_clock::now();
  r.go(nullptr, o);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  EXPECT_EQ(r.server.out.back().code, 1000);
}

TEST(WsSessions, StopAllClosesOpenSessionsAndThoseThatStartLater) {
  asio::io_context io;
  WsSessions sessions;
  FakePort c1(io.get_executor()), s1(io.get_executor()), c2(io.get_executor()), s2(io.get_executor());
  WsRelay first(io.get_executor(), c1, s1, nullptr, {});
  WsRelay second(io.get_executor(), c2, s2, nullptr, {});
  int done = 0;
  asio::co_spawn(io, sessions.run(first), [&](std::exception_ptr) {
    if (++done == 2) io.stop();
  });
  io.run_for(20ms);
  sessions.stop_all(1001, "draining");
  asio::co_spawn(io, sessions.run(second), [&](std::exception_ptr) {
    if (++done == 2) io.stop();
  });
  io.run_for(2s);
  ASSERT_EQ(done, 2);
  for (auto* p : {&c1, &s1, &c2, &s2}) {
    ASSERT_FALSE(p->out.empty());
    EXPECT_EQ(p->out.back().code, 1001);
    EXPECT_EQ(p->out.back().data, "draining");
  }
}

TEST(WsRelay, CloseReasonIsCutToTheFrameLimitOnACharacterBoundary) {
  std::string s(120, 'a');
  s += "\xc3\xa9\xc3\xa9";  // two two-byte characters: 124 bytes
  EXPECT_EQ(close_reason(s).size(), 122u);
  EXPECT_EQ(close_reason("short"), "short");
}

}  // namespace
}  // namespace postern::net
