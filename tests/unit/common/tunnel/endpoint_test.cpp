#include "common/tunnel/endpoint.hpp"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include "common/tunnel/exchange_io.hpp"
#include "support/memory_lane.hpp"

namespace postern::tunnel {
namespace {

using namespace std::chrono_literals;
using testing::MemoryLaneIo;

// An opener (the edge's side) and an acceptor (the connector's) joined by
// an in-memory lane. The acceptor keeps the exchanges opened to it.
struct Ends {
  asio::io_context io;
  MemoryLaneIo* opener_io = nullptr;
  std::shared_ptr<Endpoint> opener, acceptor;
  std::vector<std::pair<std::shared_ptr<Exchange>, tv1::RequestHead>> accepted;

  explicit Ends(Endpoint::Options acceptor_options = {}) {
    auto [a, b] = testing::memory_lane_pair(io.get_executor());
    opener_io = a.get();
    opener = std::make_shared<Endpoint>(io.get_executor(), std::move(a), Endpoint::Options{});
    acceptor = std::make_shared<Endpoint>(io.get_executor(), std::move(b), acceptor_options,
                                          [this](std::shared_ptr<Exchange> x, tv1::RequestHead&& h) {
                                            accepted.emplace_back(std::move(x), std::move(h));
                                          });
    asio::co_spawn(io, opener->run(), asio::detached);
    asio::co_spawn(io, acceptor->run(), asio::detached);
  }
  void run(std::chrono::milliseconds d = 20ms) {
    io.run_for(d);
    io.restart();
  }
  // Runs `c` to its end (or for `limit`).
  template <class F>
  void run_task(F c, std::chrono::milliseconds limit = 2000ms) {
    bool done = false;
    asio::co_spawn(io, std::move(c), [&](std::exception_ptr e) {
      done = true;
      if (e) std::rethrow_exception(e);
    });
    const auto until = std::chrono::steady_clock::now() + limit;
    while (!done && std::chrono::steady_clock::now() < until) run(5ms);
    EXPECT_TRUE(done) << "the task did not finish";
  }
};

tv1::RequestHead get(const std::string& target) {
  tv1::RequestHead h;
  h.set_method("GET");
  h.set_target(target);
  return h;
}

// Reads frames of `x` until its end or error; returns the body.
asio::awaitable<std::string> read_all(Exchange& x, bool& ended, std::optional<tv1::Error>& error) {
  std::string body;
  tv1::Frame f;
  while (co_await x.next(f)) {
    if (f.has_body()) {
      body += f.body();
      x.consumed(f.body().size());
    } else if (f.has_end()) {
      ended = true;
      break;
    } else if (f.has_error()) {
      error = f.error();
      break;
    }
  }
  co_return body;
}

TEST(TunnelEndpoint, AnExchangeCrossesBothWays) {
  Ends e;
  auto x = e.opener->open(get("/hello"));
  x->send(end_frame(0));
  e.run();
  ASSERT_EQ(e.accepted.size(), 1u);
  auto y = e.accepted[0].first;  // (clang 14: no structured bindings in lambdas)
  EXPECT_EQ(e.accepted[0].second.target(), "/hello");
  EXPECT_EQ(y->id(), x->id());
  e.run_task([&]() -> asio::awaitable<void> {
    ExchangeBody body(*y);
    std::string_view chunk;
    EXPECT_FALSE(co_await body.next(chunk));
    EXPECT_TRUE(body.ended());
    ExchangeSink sink(*y);
    tv1::ResponseHead rh;
    rh.set_status(200);
    co_await sink.head(rh);
    co_await sink.body("hi there");
    co_await sink.end({});
    bool ended = false;
    std::optional<tv1::Error> error;
    const std::string got = co_await read_all(*x, ended, error);
    EXPECT_EQ(got, "hi there");
    EXPECT_TRUE(ended);
    EXPECT_FALSE(error);
  });
  EXPECT_TRUE(x->over());
  EXPECT_TRUE(y->over());
}

// A bodyless request that came whole costs the acceptor no credit frame:
// its answer is the only thing it sends.
TEST(TunnelEndpoint, AWholeRequestIsAnsweredInOneMessage) {
  Ends e;
  auto x = e.opener->open(get("/"));
  x->send(end_frame(0));
  e.run();
  ASSERT_EQ(e.accepted.size(), 1u);
  auto y = e.accepted[0].first;
  e.run_task([&]() -> asio::awaitable<void> {
    ExchangeBody body(*y);
    std::string_view chunk;
    co_await body.next(chunk);
    ExchangeSink sink(*y);
    tv1::ResponseHead rh;
    rh.set_status(204);
    co_await sink.head(rh);
    co_await sink.end({});
  });
  e.run();
  // The opener wrote once (head, window, end); what it read came in one
  // message.
  EXPECT_EQ(e.opener_io->written().size(), 1u);
  EXPECT_TRUE(x->ready());
}

// Credit: a sender stops at its credit until the receiver takes the bytes;
// the opener's window (4 MiB by default) lets a larger body through.
TEST(TunnelEndpoint, SenderWaitsForCreditAndTheReceiverGrantsItBack) {
  Ends e;
  auto x = e.opener->open(get("/upload"));
  e.run();
  ASSERT_EQ(e.accepted.size(), 1u);
  auto y = e.accepted[0].first;
  // The acceptor has not read: the opener may send its initial credit only.
  std::size_t sent = 0;
  bool upload_done = false;
  asio::co_spawn(
      e.io,
      [&]() -> asio::awaitable<void> {
        const std::string piece(16u << 10, 'u');
        for (int i = 0; i < 32; ++i) {
          co_await x->take_credit(piece.size());
          tv1::Frame f;
          f.set_body(piece);
          x->send(std::move(f));
          sent += piece.size();
        }
        x->send(end_frame(0));
        upload_done = true;
      },
      asio::detached);
  e.run(50ms);
  EXPECT_EQ(sent, kInitialCredit) << "no more than the initial credit before the receiver reads";
  // The receiver reads (and so opens its window): the rest comes.
  std::string body;
  e.run_task([&]() -> asio::awaitable<void> {
    ExchangeBody b(*y);
    std::string_view chunk;
    while (co_await b.next(chunk)) body += chunk;
  });
  EXPECT_TRUE(upload_done);
  EXPECT_EQ(body.size(), 32u * (16u << 10));
}

// Refused beyond max_exchanges, with NO_CAPACITY naming the bound.
TEST(TunnelEndpoint, ExchangesBeyondTheBoundAreRefused) {
  Ends e(Endpoint::Options{.receive_window = 4u << 20, .max_exchanges = 2});
  auto a = e.opener->open(get("/a"));
  auto b = e.opener->open(get("/b"));
  auto c = e.opener->open(get("/c"));
  e.run();
  EXPECT_EQ(e.accepted.size(), 2u);
  e.run_task([&]() -> asio::awaitable<void> {
    bool ended = false;
    std::optional<tv1::Error> error;
    co_await read_all(*c, ended, error);
    EXPECT_TRUE(error);
    if (!error) co_return;
    EXPECT_EQ(error->code(), tv1::ERROR_CODE_NO_CAPACITY);
    EXPECT_NE(error->message().find("runs 2 exchanges already"), std::string::npos) << error->message();
  });
}

// Letting an exchange go tells the far side (CLIENT_GONE); abandon() sends
// the code given. The lane carries on.
TEST(TunnelEndpoint, ALetGoExchangeTellsTheFarSideAndTheLaneCarriesOn) {
  Ends e;
  auto x = e.opener->open(get("/a"));
  e.run();
  ASSERT_EQ(e.accepted.size(), 1u);
  auto y = e.accepted[0].first;
  x.reset();
  e.run();
  e.run_task([&]() -> asio::awaitable<void> {
    tv1::Frame f;
    EXPECT_TRUE(co_await y->next(f));
    EXPECT_TRUE(f.has_error());
    EXPECT_EQ(f.error().code(), tv1::ERROR_CODE_CLIENT_GONE);
  });
  auto x2 = e.opener->open(get("/b"));
  e.run();
  ASSERT_EQ(e.accepted.size(), 2u);
  e.accepted[1].first->abandon(tv1::ERROR_CODE_UNKNOWN_ALIAS, "no such alias");
  e.run_task([&]() -> asio::awaitable<void> {
    bool ended = false;
    std::optional<tv1::Error> error;
    co_await read_all(*x2, ended, error);
    EXPECT_TRUE(error);
    if (error) {
      EXPECT_EQ(error->code(), tv1::ERROR_CODE_UNKNOWN_ALIAS);
    }
  });
  EXPECT_TRUE(e.opener->usable());
}

// A lane that ends cuts every exchange on it: readers see the end at once,
// writers waiting for credit give up.
TEST(TunnelEndpoint, ALaneThatEndsCutsItsExchanges) {
  Ends e;
  auto x = e.opener->open(get("/a"));
  auto x2 = e.opener->open(get("/b"));
  e.run();
  bool read_ended = false, writer_gave_up = false;
  asio::co_spawn(
      e.io,
      [&]() -> asio::awaitable<void> {
        tv1::Frame f;
        while (co_await x->next(f)) {
        }
        read_ended = true;
      },
      asio::detached);
  asio::co_spawn(
      e.io,
      [&]() -> asio::awaitable<void> {
        co_await x2->take_credit(kInitialCredit);
        co_await x2->take_credit(1);  // no credit left: waits
        writer_gave_up = !x2->usable();
      },
      asio::detached);
  e.run();
  e.opener->lane().abort();
  e.run();
  EXPECT_TRUE(read_ended);
  EXPECT_TRUE(writer_gave_up);
  EXPECT_EQ(x->cut_reason(), "the tunnel lane ended");
  EXPECT_TRUE(e.opener->ended().is_set());
  EXPECT_TRUE(e.acceptor->over());
  // A head queued on a lane that ended is cut at once.
  auto late = e.opener->open(get("/late"));
  EXPECT_FALSE(late->usable());
}

// may_have_left(): false until a write that held the head has begun, so
// that an exchange the far side never saw may go elsewhere.
TEST(TunnelEndpoint, MayHaveLeftOnlyOnceAWriteHeldTheHead) {
  Ends e;
  e.run();
  e.opener_io->hold_writes();
  auto x = e.opener->open(get("/a"));
  EXPECT_FALSE(x->may_have_left());
  e.run();
  EXPECT_TRUE(x->may_have_left()) << "its write began (and is in flight)";
  e.opener_io->release_writes();
  e.run();
}

}  // namespace
}  // namespace postern::tunnel
