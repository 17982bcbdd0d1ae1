// postern-bench-grpc-floor: what two gRPC hops cost on their own, with no
// HTTP, no policies and no TLS, through the same bridge (one Asio thread and
// one completion-queue pump per process) and the same kept-stream pattern as
// Postern's small exchanges. Three processes, as Postern's three:
//
//   client ──Relay.Invoke──▶ relay ──Relay.Invoke──▶ server
//
// Each of the client's streams carries one exchange after another: a request
// head (with its End in `then`), answered by a response head, a small body
// and an End in one message. The relay splices each stream onto one of its
// own to the server, as the broker splices an Invoke onto a Pull. The client
// prints one JSON line: exchanges per second, latency percentiles and its own
// CPU time.
//
//   postern-bench-grpc-floor server --listen 127.0.0.1:9001
//   postern-bench-grpc-floor relay  --listen 127.0.0.1:9000 --upstream 127.0.0.1:9001
//   postern-bench-grpc-floor client --target 127.0.0.1:9000 --streams 64 --seconds 10
//
// With --bulk-mib N the client instead moves N MiB down (server to client)
// and then N MiB up, in 256 KiB body pieces as Postern's largest, on one
// stream each, and prints MB/s for both.
//
// The ceiling any design with a gRPC message per exchange per hop can reach
// on a machine; tests/bench/run.sh runs it beside the real path.

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

#include "common/asio.hpp"
#include "common/event.hpp"
#include "common/grpc/bridge.hpp"
#include "common/grpc/channel.hpp"
#include "postern/tunnel/v1/tunnel.grpc.pb.h"

namespace {

using namespace postern;
namespace gb = postern::grpc_bridge;
namespace tv1 = postern::tunnel::v1;
using Clock = std::chrono::steady_clock;
using ServerStream = grpc::ServerAsyncReaderWriter<tv1::Frame, tv1::Frame>;
using ClientStream = grpc::ClientAsyncReaderWriter<tv1::Frame, tv1::Frame>;

struct ServerCall {
  grpc::ServerContext ctx;
  ServerStream stream{&ctx};
};

struct ClientCall {
  grpc::ClientContext ctx;
  std::unique_ptr<ClientStream> stream;
};

std::unique_ptr<ClientCall> open_call(tv1::Relay::Stub& stub, grpc::CompletionQueue* cq) {
  auto c = std::make_unique<ClientCall>();
  c->ctx.set_initial_metadata_corked(true);
  // A relay or server still starting is waited for, not a failure.
  c->ctx.set_wait_for_ready(true);
  c->stream = stub.PrepareAsyncInvoke(&c->ctx, cq);
  gb::start_detached(*c->stream);
  return c;
}

std::shared_ptr<grpc::Channel> dial(const std::string& target) {
  auto args = gb::client_channel_args();
  gb::apply_dmz_link_args(args);
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

tv1::Frame request_frame() {
  tv1::Frame f;
  auto* h = f.mutable_request_head();
  h->set_request_id("0123456789abcdef");
  h->set_alias("floor");
  h->set_method("GET");
  h->set_target("/");
  f.add_then()->mutable_end();
  return f;
}

tv1::Frame response_frame() {
  tv1::Frame f;
  f.mutable_response_head()->set_status(200);
  f.mutable_response_head()->set_content_length(5);
  f.add_then()->mutable_body()->set_data("hello");
  f.add_then()->mutable_end();
  return f;
}

// Accepts Invoke calls on `cq` and runs `handle` for each.
template <class Handle>
asio::awaitable<void> accept(tv1::Relay::AsyncService& svc, grpc::ServerCompletionQueue* cq, Handle handle) {
  auto ex = co_await asio::this_coro::executor;
  for (;;) {
    auto call = std::make_shared<ServerCall>();
    const bool ok = co_await gb::op([&](void* tag) { svc.RequestInvoke(&call->ctx, &call->stream, cq, cq, tag); });
    if (!ok) co_return;
    asio::co_spawn(ex, handle(call), asio::detached);
  }
}

constexpr std::size_t kPiece = 256 * 1024;

// One 256 KiB body piece, built once per process and sent again and again.
const tv1::Frame& bulk_piece() {
  static const tv1::Frame piece = [] {
    tv1::Frame f;
    f.mutable_body()->mutable_data()->assign(kPiece, 'x');
    return f;
  }();
  return piece;
}

tv1::Frame end_frame() {
  tv1::Frame f;
  f.mutable_end();
  return f;
}

// Answers each request on the stream: "/down/N" with N MiB of body, "/up"
// once its body's End has come, anything else with a small body.
asio::awaitable<void> serve(std::shared_ptr<ServerCall> call) {
  const tv1::Frame answer = response_frame();
  tv1::Frame in;
  for (;;) {
    const bool got = co_await gb::read(call->stream, in);
    if (!got) break;
    const std::string target = in.has_request_head() ? in.request_head().target() : std::string();
    if (target.rfind("/down/", 0) == 0) {
      tv1::Frame head;
      head.mutable_response_head()->set_status(200);
      bool sent = co_await gb::write(call->stream, head);
      const std::size_t total = std::stoull(target.substr(6)) << 20;
      for (std::size_t done = 0; sent && done < total; done += kPiece) {
        sent = co_await gb::write(call->stream, bulk_piece());
      }
      const tv1::Frame end = end_frame();
      if (sent) sent = co_await gb::write(call->stream, end);
      if (!sent) break;
      continue;
    }
    if (target == "/up") {
      bool ended = in.then_size() > 0 && in.then(in.then_size() - 1).has_end();
      bool open = true;
      while (open && !ended) {
        open = co_await gb::read(call->stream, in);
        ended = open && in.has_end();
      }
      if (!open) break;
    }
    const bool sent = co_await gb::write(call->stream, answer);
    if (!sent) break;
  }
  co_await gb::op([&](void* tag) { call->stream.Finish(grpc::Status::OK, tag); });
}

// Moves every frame from `from` to `to` until `from` ends or a write fails.
template <class From, class To>
asio::awaitable<void> forward(From& from, To& to) {
  tv1::Frame f;
  for (;;) {
    const bool got = co_await gb::read(from, f);
    if (!got) co_return;
    const bool sent = co_await gb::write(to, f);
    if (!sent) co_return;
  }
}

// The broker's part: the client's stream spliced onto one to the server,
// frames moving both ways at once.
asio::awaitable<void> splice(std::shared_ptr<ServerCall> down, tv1::Relay::Stub& stub, grpc::CompletionQueue* cq) {
  auto ex = co_await asio::this_coro::executor;
  auto up = open_call(stub, cq);
  Event answers_done(ex);
  asio::co_spawn(ex, forward(*up->stream, down->stream), [&](std::exception_ptr) { answers_done.set(); });
  co_await forward(down->stream, *up->stream);
  up->ctx.TryCancel();
  co_await answers_done.wait();
  grpc::Status status;
  co_await gb::op([&](void* tag) { up->stream->Finish(&status, tag); });
  co_await gb::op([&](void* tag) { down->stream.Finish(grpc::Status::OK, tag); });
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

asio::awaitable<void> exchange_loop(tv1::Relay::Stub& stub, grpc::CompletionQueue* cq, Clock::time_point until,
                                    Tally& tally) {
  auto call = open_call(stub, cq);
  const tv1::Frame request = request_frame();
  tv1::Frame answer;
  while (Clock::now() < until) {
    const auto t0 = Clock::now();
    const bool sent = co_await gb::write(*call->stream, request);
    if (!sent) break;
    const bool got = co_await gb::read(*call->stream, answer);
    if (!got || !answer.has_response_head()) break;
    tally.latencies_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  if (Clock::now() < until) ++tally.failures;
  call->ctx.TryCancel();
  grpc::Status status;
  co_await gb::op([&](void* tag) { call->stream->Finish(&status, tag); });
}

// One transfer of `mib` MiB on a fresh stream: down (the server sends) or up.
// Returns MB/s (10^6 bytes per second), or a negative number on failure.
asio::awaitable<double> transfer(tv1::Relay::Stub& stub, grpc::CompletionQueue* cq, std::size_t mib, bool down) {
  auto call = open_call(stub, cq);
  const auto t0 = Clock::now();
  tv1::Frame request = request_frame();
  request.mutable_request_head()->set_target(down ? "/down/" + std::to_string(mib) : "/up");
  bool ok = true;
  tv1::Frame in;
  if (down) {
    // The request's End rides with its head (request_frame's `then`).
    ok = co_await gb::write(*call->stream, request);
    std::size_t got = 0;
    bool ended = false;
    while (ok && !ended) {
      ok = co_await gb::read(*call->stream, in);
      if (ok && in.has_body()) got += in.body().data().size();
      ended = ok && in.has_end();
    }
    ok = ok && got == (mib << 20);
  } else {
    request.clear_then();  // the body follows the head; the End comes after it
    ok = co_await gb::write(*call->stream, request);
    for (std::size_t done = 0; ok && done < (mib << 20); done += kPiece) {
      ok = co_await gb::write(*call->stream, bulk_piece());
    }
    const tv1::Frame end = end_frame();
    if (ok) ok = co_await gb::write(*call->stream, end);
    if (ok) ok = co_await gb::read(*call->stream, in);
    ok = ok && in.has_response_head();
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  call->ctx.TryCancel();
  grpc::Status status;
  co_await gb::op([&](void* tag) { call->stream->Finish(&status, tag); });
  co_return ok ? static_cast<double>(mib << 20) / seconds / 1e6 : -1.0;
}

int run_bulk(const std::string& target, std::size_t mib) {
  asio::io_context ioc(1);
  gb::Pump pump(std::make_unique<grpc::CompletionQueue>(), "cq-floor");
  auto stub = tv1::Relay::NewStub(dial(target));
  double down = -1, up = -1;
  asio::co_spawn(
      ioc,
      [&]() -> asio::awaitable<void> {
        down = co_await transfer(*stub, pump.cq(), mib, true);
        up = co_await transfer(*stub, pump.cq(), mib, false);
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
    asio::co_spawn(ioc, accept(svc, cq, [&](std::shared_ptr<ServerCall> c) { return splice(std::move(c), *stub, cq); }),
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
  auto run_for = [&](double s, Tally& tally) {
    const auto until = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
    for (int i = 0; i < streams; ++i) {
      asio::co_spawn(ioc, exchange_loop(*stub, pump.cq(), until, tally), asio::detached);
    }
    ioc.restart();
    ioc.run();
  };
  Tally warm, tally;
  run_for(warmup, warm);
  const auto t0 = Clock::now();
  run_for(seconds, tally);
  const double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
  auto& l = tally.latencies_ms;
  std::sort(l.begin(), l.end());
  auto pct = [&](double p) {
    return l.empty() ? 0.0 : l[std::min(l.size() - 1, static_cast<std::size_t>(p * static_cast<double>(l.size())))];
  };
  std::printf(
      "{\"exchanges\": %zu, \"seconds\": %.3f, \"exchanges_per_s\": %.1f, \"p50_ms\": %.3f, \"p99_ms\": %.3f, "
      "\"max_ms\": %.3f, \"failed_streams\": %llu, \"exchanges_total\": %zu, \"client_cpu_s\": %.3f}\n",
      l.size(), elapsed, static_cast<double>(l.size()) / elapsed, pct(0.50), pct(0.99), l.empty() ? 0.0 : l.back(),
      static_cast<unsigned long long>(tally.failures + warm.failures), l.size() + warm.latencies_ms.size(),
      own_cpu_seconds());
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
