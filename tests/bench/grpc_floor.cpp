// postern-bench-grpc-floor: what two gRPC hops cost on their own, with no
// HTTP, no policies and no TLS, through the same bridge (one Asio thread and
// one completion-queue pump per process) and the same lanes (tunnel.proto)
// as Postern. Three processes, as Postern's three:
//
//   client ──Relay.Lane──▶ relay ──Relay.Lane──▶ server
//
// The client keeps N exchanges going at once on one lane: a request head
// with its end, answered by a response head, a small body and an end. The
// relay passes every frame from one lane to the other as it comes (same
// ids: one lane each side), batching as Postern's lanes do; it does none of
// the broker's routing, order or credit checks. The client prints one JSON
// line: exchanges per second, latency percentiles, frames per message and
// its own CPU time.
//
//   postern-bench-grpc-floor server --listen 127.0.0.1:9001
//   postern-bench-grpc-floor relay  --listen 127.0.0.1:9000 --upstream 127.0.0.1:9001
//   postern-bench-grpc-floor client --target 127.0.0.1:9000 --streams 64 --seconds 10
//
// (--streams: exchanges at once.) With --bulk-mib N the client instead
// moves N MiB down (server to client) and then N MiB up, in 256 KiB body
// pieces on credit, and prints MB/s for both.
//
// The ceiling the lane design can reach on a machine; tests/bench/run.sh
// runs it beside the real path.

#include <grpcpp/grpcpp.h>
#include <sys/resource.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <prometheus/histogram.h>

#include "common/asio.hpp"
#include "common/event.hpp"
#include "common/grpc/bridge.hpp"
#include "common/grpc/channel.hpp"
#include "common/tunnel/endpoint.hpp"
#include "common/tunnel/exchange_io.hpp"
#include "common/tunnel/lane_io.hpp"
#include "postern/tunnel/v1/tunnel.grpc.pb.h"

namespace {

using namespace postern;
namespace gb = postern::grpc_bridge;
namespace tv1 = postern::tunnel::v1;
using Clock = std::chrono::steady_clock;

constexpr std::size_t kPiece = tunnel::kBodyPieceBytes;

std::shared_ptr<grpc::Channel> dial(const std::string& target) {
  auto args = gb::client_channel_args();
  gb::apply_dmz_link_args(args);
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

// A client lane to `stub`'s server (waits for a server still starting).
std::unique_ptr<tunnel::LaneIo> client_lane(tv1::Relay::Stub& stub, grpc::CompletionQueue* cq) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_initial_metadata_corked(true);
  ctx->set_wait_for_ready(true);
  auto stream = stub.PrepareAsyncLane(ctx.get(), cq);
  return std::make_unique<tunnel::ClientLaneIo>(std::move(ctx), std::move(stream));
}

tv1::LaneMessage hello() {
  tv1::LaneMessage m;
  m.mutable_hello()->set_peer("floor");
  return m;
}

tv1::RequestHead request_head(const std::string& target) {
  tv1::RequestHead h;
  h.set_request_id("0123456789abcdef");
  h.set_alias("floor");
  h.set_method("GET");
  h.set_target(target);
  return h;
}

// Accepts lanes on `cq` and runs `handle` for each.
template <class Handle>
asio::awaitable<void> accept(tv1::Relay::AsyncService& svc, grpc::ServerCompletionQueue* cq, Handle handle) {
  auto ex = co_await asio::this_coro::executor;
  for (;;) {
    auto io = std::make_unique<tunnel::ServerLaneIo>();
    const bool ok = co_await gb::op([&](void* tag) { svc.RequestLane(&io->context(), &io->stream(), cq, cq, tag); });
    if (!ok) co_return;
    asio::co_spawn(ex, handle(std::move(io)), asio::detached);
  }
}

// The server's answer to one exchange: "/down/N" with N MiB of body, "/up"
// once its body has come, anything else a small body.
asio::awaitable<void> answer(std::shared_ptr<tunnel::Exchange> x, tv1::RequestHead head) {
  tunnel::ExchangeBody body(*x);
  tunnel::ExchangeSink sink(*x);
  try {
    std::string_view chunk;
    while (co_await body.next(chunk)) {
    }
    tv1::ResponseHead rh;
    rh.set_status(200);
    const std::string& target = head.target();
    if (target.rfind("/down/", 0) == 0) {
      co_await sink.head(rh);
      static const std::string piece(kPiece, 'x');
      const std::size_t total = std::stoull(target.substr(6)) << 20;
      for (std::size_t done = 0; done < total; done += kPiece) co_await sink.body(piece);
    } else {
      rh.set_content_length(5);
      co_await sink.head(rh);
      co_await sink.body("hello");
    }
    co_await sink.end({});
  } catch (const std::exception& e) {
    std::fprintf(stderr, "grpc-floor: exchange %s ended early: %s\n", head.target().c_str(), e.what());
  }
}

asio::awaitable<void> serve(std::unique_ptr<tunnel::ServerLaneIo> io) {
  auto ex = co_await asio::this_coro::executor;
  auto endpoint = std::make_shared<tunnel::Endpoint>(
      ex, std::move(io), tunnel::Endpoint::Options{},
      [ex](std::shared_ptr<tunnel::Exchange> x, tv1::RequestHead&& h) {
        asio::co_spawn(ex, answer(std::move(x), std::move(h)), asio::detached);
      });
  co_await endpoint->run();
}

// Every frame from one lane goes on the other as it comes.
struct PassOn final : tunnel::LaneHandler {
  tunnel::Lane* to = nullptr;
  void on_frame(tv1::Frame&& f) override { to->send(std::move(f)); }
};

// The broker's part, without its routing: the client's lane joined to one
// of its own to the server.
asio::awaitable<void> relay(std::unique_ptr<tunnel::ServerLaneIo> io, tv1::Relay::Stub& stub,
                            grpc::CompletionQueue* cq) {
  auto ex = co_await asio::this_coro::executor;
  tunnel::Lane down(ex, std::move(io));
  tunnel::Lane up(ex, client_lane(stub, cq));
  PassOn to_up, to_down;
  to_up.to = &up;
  to_down.to = &down;
  Event up_done(ex);
  asio::co_spawn(ex, up.run(to_down, hello()), [&](std::exception_ptr) {
    down.abort();
    up_done.set();
  });
  co_await down.run(to_up);
  up.abort();
  co_await up_done.wait();
}

// CPU time of this process so far, every thread, in seconds.
double own_cpu_seconds() {
  rusage self{};
  getrusage(RUSAGE_SELF, &self);
  auto secs = [](const timeval& tv) { return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6; };
  return secs(self.ru_utime) + secs(self.ru_stime);
}

struct Tally {
  std::vector<double> latencies_ms;
  std::uint64_t failures = 0;
};

// One exchange after another on `lane` until `until`.
asio::awaitable<void> exchange_loop(std::shared_ptr<tunnel::Endpoint> lane, Clock::time_point until, Tally& tally) {
  const tv1::RequestHead head = request_head("/");
  while (Clock::now() < until) {
    const auto t0 = Clock::now();
    auto x = lane->open(head);
    x->send(tunnel::end_frame(0));
    tv1::Frame f;
    bool ended = false;
    // (GCC 12 miscompiles co_await in a loop condition: await into a local.)
    for (;;) {
      const bool got = co_await x->next(f);
      if (!got) break;
      ended = f.has_end() || f.has_error();
      if (ended) break;
    }
    if (!ended || f.has_error()) {
      ++tally.failures;
      co_return;
    }
    tally.latencies_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
}

// One transfer of `mib` MiB: down (the server sends) or up. Returns MB/s
// (10^6 bytes per second), or a negative number on failure.
asio::awaitable<double> transfer(std::shared_ptr<tunnel::Endpoint> lane, std::size_t mib, bool down) {
  const auto t0 = Clock::now();
  auto x = lane->open(request_head(down ? "/down/" + std::to_string(mib) : "/up"));
  if (!down) {
    static const std::string piece(kPiece, 'u');
    for (std::size_t done = 0; done < (mib << 20); done += kPiece) {
      co_await x->take_credit(kPiece);
      if (!x->usable()) co_return -1.0;
      tv1::Frame f;
      f.set_body(piece);
      x->send(std::move(f));
    }
  }
  x->send(tunnel::end_frame(0));
  std::size_t got = 0;
  bool ended = false;
  tv1::Frame f;
  for (;;) {
    const bool more = co_await x->next(f);
    if (!more) break;
    if (f.has_body()) {
      got += f.body().size();
      x->consumed(f.body().size());
    }
    ended = f.has_end();
    if (ended) break;
  }
  const bool ok = ended && (!down || got == (mib << 20));
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  co_return ok ? static_cast<double>(mib << 20) / seconds / 1e6 : -1.0;
}

// A lane to `target`, run until the client stops.
std::shared_ptr<tunnel::Endpoint> open_lane(asio::io_context& ioc, tv1::Relay::Stub& stub, grpc::CompletionQueue* cq,
                                            prometheus::Histogram* frames) {
  auto lane = std::make_shared<tunnel::Endpoint>(ioc.get_executor(), client_lane(stub, cq),
                                                 tunnel::Endpoint::Options{}, nullptr, frames);
  asio::co_spawn(ioc, lane->run(hello()), asio::detached);
  return lane;
}

int run_bulk(const std::string& target, std::size_t mib) {
  asio::io_context ioc(1);
  gb::Pump pump(std::make_unique<grpc::CompletionQueue>(), "cq-floor");
  auto stub = tv1::Relay::NewStub(dial(target));
  auto lane = open_lane(ioc, *stub, pump.cq(), nullptr);
  double down = -1, up = -1;
  asio::co_spawn(
      ioc,
      [&]() -> asio::awaitable<void> {
        down = co_await transfer(lane, mib, true);
        up = co_await transfer(lane, mib, false);
        lane->lane().abort();
      },
      asio::detached);
  ioc.run();
  std::printf("{\"mib\": %zu, \"down_mbps\": %.1f, \"up_mbps\": %.1f, \"client_cpu_s\": %.3f}\n", mib, down, up,
              own_cpu_seconds());
  std::fflush(stdout);
  std::_Exit(down > 0 && up > 0 ? 0 : 1);
}

std::map<std::string, std::string> flags(int argc, char** argv, int from) {
  std::map<std::string, std::string> out;
  for (int i = from; i + 1 < argc; i += 2) out[argv[i]] = argv[i + 1];
  return out;
}

[[noreturn]] void usage() {
  std::fprintf(stderr,
               "usage: postern-bench-grpc-floor server --listen ADDR\n"
               "       postern-bench-grpc-floor relay --listen ADDR --upstream ADDR\n"
               "       postern-bench-grpc-floor client --target ADDR [--streams N] [--seconds S] [--warmup S]\n"
               "       postern-bench-grpc-floor client --target ADDR --bulk-mib N\n");
  std::exit(2);
}

int run_server(const std::string& listen, const std::string* upstream) {
  asio::io_context ioc(1);
  tv1::Relay::AsyncService svc;
  grpc::ServerBuilder b;
  int port = 0;
  b.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  b.RegisterService(&svc);
  gb::apply_server_args(b);
  gb::apply_dmz_link_server_args(b);
  auto q = b.AddCompletionQueue();
  auto* cq = q.get();
  auto server = b.BuildAndStart();
  if (!server || port == 0) {
    std::fprintf(stderr, "grpc-floor: cannot listen on %s\n", listen.c_str());
    return 1;
  }
  // Client calls of the relay ride the same queue and pump.
  gb::Pump pump(std::move(q), "cq-floor");
  std::unique_ptr<tv1::Relay::Stub> stub;
  if (upstream) stub = tv1::Relay::NewStub(dial(*upstream));
  if (stub) {
    asio::co_spawn(
        ioc,
        accept(svc, cq, [&](std::unique_ptr<tunnel::ServerLaneIo> io) { return relay(std::move(io), *stub, cq); }),
        asio::detached);
  } else {
    asio::co_spawn(ioc, accept(svc, cq, serve), asio::detached);
  }
  asio::signal_set signals(ioc, SIGINT, SIGTERM);
  signals.async_wait([&](auto, int) {
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(200));
    ioc.stop();
  });
  ioc.run();
  std::fflush(stdout);
  std::_Exit(0);
}

int run_client(const std::string& target, int streams, double seconds, double warmup) {
  asio::io_context ioc(1);
  gb::Pump pump(std::make_unique<grpc::CompletionQueue>(), "cq-floor");
  auto stub = tv1::Relay::NewStub(dial(target));
  prometheus::Histogram frames(prometheus::Histogram::BucketBoundaries{1, 2, 4, 8, 16, 32, 64, 128, 256, 512});
  auto lane = open_lane(ioc, *stub, pump.cq(), &frames);
  auto run_for = [&](double s, Tally& tally) {
    const auto until = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
    int left = streams;
    for (int i = 0; i < streams; ++i) {
      asio::co_spawn(ioc, exchange_loop(lane, until, tally), [&](std::exception_ptr) {
        if (--left == 0) ioc.stop();
      });
    }
    ioc.restart();
    ioc.run();
  };
  Tally warm, tally;
  run_for(warmup, warm);
  const auto m0 = frames.Collect().histogram;
  const auto t0 = Clock::now();
  run_for(seconds, tally);
  const double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
  const auto m1 = frames.Collect().histogram;
  const double messages = static_cast<double>(m1.sample_count - m0.sample_count);
  const double frames_per_message = messages > 0 ? (m1.sample_sum - m0.sample_sum) / messages : 0.0;
  auto& l = tally.latencies_ms;
  std::sort(l.begin(), l.end());
  auto pct = [&](double p) {
    return l.empty() ? 0.0 : l[std::min(l.size() - 1, static_cast<std::size_t>(p * static_cast<double>(l.size())))];
  };
  std::printf(
      "{\"exchanges\": %zu, \"seconds\": %.3f, \"exchanges_per_s\": %.1f, \"p50_ms\": %.3f, \"p99_ms\": %.3f, "
      "\"max_ms\": %.3f, \"failed_streams\": %llu, \"exchanges_total\": %zu, \"frames_per_message\": %.2f, "
      "\"client_cpu_s\": %.3f}\n",
      l.size(), elapsed, static_cast<double>(l.size()) / elapsed, pct(0.50), pct(0.99), l.empty() ? 0.0 : l.back(),
      static_cast<unsigned long long>(tally.failures + warm.failures), l.size() + warm.latencies_ms.size(),
      frames_per_message, own_cpu_seconds());
  std::fflush(stdout);
  std::_Exit(tally.failures + warm.failures == 0 && !l.empty() ? 0 : 1);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) usage();
  const std::string mode = argv[1];
  auto f = flags(argc, argv, 2);
  auto need = [&](const char* k) -> const std::string& {
    auto it = f.find(k);
    if (it == f.end()) usage();
    return it->second;
  };
  auto number = [&](const char* k, double d) { return f.count(k) ? std::atof(f[k].c_str()) : d; };
  if (mode == "server") return run_server(need("--listen"), nullptr);
  if (mode == "relay") return run_server(need("--listen"), &need("--upstream"));
  if (mode == "client" && f.count("--bulk-mib")) {
    return run_bulk(need("--target"), static_cast<std::size_t>(number("--bulk-mib", 0)));
  }
  if (mode == "client") {
    return run_client(need("--target"), static_cast<int>(number("--streams", 64)), number("--seconds", 10),
                      number("--warmup", 1));
  }
  usage();
}
