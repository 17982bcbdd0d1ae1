#include "edge/relay_client.hpp"

#include <grpcpp/grpcpp.h>

#include <optional>

#include "common/event.hpp"
#include "common/grpc/bridge.hpp"
#include "common/grpc/channel.hpp"
#include "common/grpc/frame_port.hpp"
#include "common/grpc/snapshot_watcher.hpp"
#include "postern/tunnel/v1/tunnel.grpc.pb.h"

namespace postern::edge {

namespace tv1 = tunnel::v1;
namespace gb = grpc_bridge;
using FrameStream = grpc::ClientAsyncReaderWriter<tv1::Frame, tv1::Frame>;

namespace {

// An exchange that ended before the far side answered: a timeout, a broker
// that cannot be reached, or a stream that ended under us.
[[noreturn]] void throw_no_answer(bool timed_out, bool anything_received, const grpc::Status& st,
                                  std::chrono::milliseconds head_timeout, const std::string& broker,
                                  const std::string& what) {
  if (timed_out) {
    throw ExchangeError(tv1::ERROR_CODE_UPSTREAM_TIMEOUT,
                        what + " within " + std::to_string(head_timeout.count()) + " ms");
  }
  if (!anything_received && st.error_code() == grpc::StatusCode::UNAVAILABLE) {
    throw ExchangeError(tv1::ERROR_CODE_UPSTREAM_UNREACHABLE,
                        "cannot reach the broker at " + broker + ": " + st.error_message());
  }
  throw ExchangeError(tv1::ERROR_CODE_CONNECTOR_LOST, "the exchange ended with " + what + " (" +
                                                          std::to_string(static_cast<int>(st.error_code())) + " " +
                                                          st.error_message() + ")");
}

}  // namespace

struct RelayClient::Impl {
  asio::any_io_executor ex;
  std::string address;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<tv1::Relay::Stub> stub;
  std::unique_ptr<gb::Pump> pump;
  std::unique_ptr<gb::SnapshotWatcher> watcher;
};

RelayClient::RelayClient(asio::any_io_executor ex, const config::v1::RelayClient& cfg)
    : impl_(std::make_unique<Impl>()) {
  impl_->ex = ex;
  impl_->address = cfg.address();
  if (cfg.address().empty()) throw std::runtime_error("broker.address is required");
  grpc::ChannelArguments args = gb::client_channel_args();
  auto creds = gb::client_credentials(cfg.has_tls() ? &cfg.tls() : nullptr, "broker", args);
  impl_->channel = grpc::CreateCustomChannel(cfg.address(), creds, args);
  impl_->stub = tv1::Relay::NewStub(impl_->channel);
  impl_->pump = std::make_unique<gb::Pump>(std::make_unique<grpc::CompletionQueue>(), "cq-relay");
}

RelayClient::~RelayClient() = default;

asio::awaitable<void> RelayClient::invoke(const tv1::RequestHead& head, BodySource& body, ResponseSink& sink,
                                          std::chrono::milliseconds head_timeout) {
  auto& im = *impl_;
  grpc::ClientContext ctx;
  std::unique_ptr<FrameStream> stream = im.stub->PrepareAsyncInvoke(&ctx, im.pump->cq());
  bool got_head = false;
  bool timed_out = false;
  Deadline head_deadline(im.ex, head_timeout, [&] {
    if (!got_head) {
      timed_out = true;
      ctx.TryCancel();
    }
  });
  std::exception_ptr failure;
  bool anything_received = false;
  bool ended = false;
  try {
    bool ok = co_await gb::op([&](void* tag) { stream->StartCall(tag); });
    if (ok) {
      tv1::Frame f;
      *f.mutable_request_head() = head;
      ok = co_await gb::write(*stream, f);
    }
    // Upload the body; a failed write means the broker ended the stream
    // (an early answer or an error): stop and read what it said.
    if (ok) {
      tv1::Frame f;
      std::string_view chunk;
      for (;;) {
        const bool more = co_await body.next(chunk);
        if (!more) break;
        f.mutable_body()->mutable_data()->assign(chunk.data(), chunk.size());
        const bool sent = co_await gb::write(*stream, f);
        ok = sent;
        if (!ok) break;
      }
      if (ok) {
        *f.mutable_end()->mutable_trailers() = body.trailers();
        ok = co_await gb::write(*stream, f);
      }
      if (ok) {
        co_await gb::op([&](void* tag) { stream->WritesDone(tag); });
      }
    }
    for (;;) {
      tv1::Frame f;
      const bool got = co_await gb::read(*stream, f);
      if (!got) break;
      anything_received = true;
      // The sink writes a body only after a head, and one head: frames out
      // of that order (the broker checks them too) end the exchange.
      if (f.has_error()) throw ExchangeError(f.error().code(), f.error().message());
      if (f.has_response_head() == got_head) {
        throw ExchangeError(tv1::ERROR_CODE_UPSTREAM_PROTOCOL,
                            got_head ? "the broker sent a second response head"
                                     : "the broker sent a response frame before the response head");
      }
      if (f.has_response_head()) {
        got_head = true;
        head_deadline.disarm();
        co_await sink.head(*f.mutable_response_head());
      } else if (f.has_body()) {
        co_await sink.body(f.body().data());
      } else if (f.has_end()) {
        co_await sink.end(f.end().trailers());
        ended = true;
        break;
      }
    }
  } catch (...) {
    failure = std::current_exception();
  }
  if (failure) ctx.TryCancel();
  grpc::Status st;
  co_await gb::op([&](void* tag) { stream->Finish(&st, tag); });
  if (failure) std::rethrow_exception(failure);
  if (ended) co_return;
  if (!sink.started() || !got_head) {
    throw_no_answer(timed_out, anything_received, st, head_timeout, im.address, "no response");
  }
  throw ExchangeError(tv1::ERROR_CODE_CONNECTOR_LOST, "the response was cut off mid-body");
}

struct WsTunnel::Impl {
  asio::any_io_executor ex;
  grpc::ClientContext ctx;
  std::unique_ptr<FrameStream> stream;
  tv1::ResponseHead head;
  std::string body;
  std::unique_ptr<gb::FramePort> port;
  bool finished = false;
};

WsTunnel::WsTunnel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
WsTunnel::~WsTunnel() {
  // close() was not awaited (an exception on the way): cancel so that gRPC
  // lets go of the call; the tags complete into a queue that outlives us.
  if (!impl_->finished) impl_->ctx.TryCancel();
}
const tv1::ResponseHead& WsTunnel::head() const { return impl_->head; }
const std::string& WsTunnel::body() const { return impl_->body; }
net::WsPort& WsTunnel::port() { return *impl_->port; }

asio::awaitable<void> WsTunnel::close() {
  auto& im = *impl_;
  if (im.finished) co_return;
  co_await im.port->drain(std::chrono::seconds(2));
  grpc::Status st;
  co_await gb::op([&](void* tag) { im.stream->Finish(&st, tag); });
  im.finished = true;
}

asio::awaitable<std::unique_ptr<WsTunnel>> RelayClient::open_websocket(const tv1::RequestHead& head,
                                                                       std::chrono::milliseconds head_timeout,
                                                                       std::size_t max_message_bytes) {
  auto& im = *impl_;
  auto t = std::make_unique<WsTunnel::Impl>();
  t->ex = im.ex;
  t->stream = im.stub->PrepareAsyncInvoke(&t->ctx, im.pump->cq());
  t->port = std::make_unique<gb::FramePort>(im.ex, *t->stream, t->ctx, max_message_bytes);
  auto tunnel = std::make_unique<WsTunnel>(std::move(t));
  auto& w = *tunnel->impl_;
  bool got_head = false, timed_out = false, anything = false;
  std::optional<ExchangeError> failure;
  {
    Deadline head_deadline(im.ex, head_timeout, [&] {
      if (!got_head) {
        timed_out = true;
        w.ctx.TryCancel();
      }
    });
    bool ok = co_await gb::op([&](void* tag) { w.stream->StartCall(tag); });
    if (ok) {
      tv1::Frame f;
      *f.mutable_request_head() = head;
      ok = co_await gb::write(*w.stream, f);
    }
    tv1::Frame f;
    bool ended = false;
    while (ok) {
      f.Clear();
      ok = co_await gb::read(*w.stream, f);
      if (!ok) break;
      anything = true;
      if (f.has_response_head()) {
        got_head = true;
        head_deadline.disarm();
        w.head = std::move(*f.mutable_response_head());
        if (w.head.status() == 101) co_return tunnel;
      } else if (f.has_body()) {
        if (w.body.size() < (1u << 20)) w.body.append(f.body().data());
      } else if (f.has_end()) {
        ended = true;
        break;
      } else if (f.has_error()) {
        failure.emplace(f.error().code(), f.error().message());
        break;
      }
    }
    if (got_head && ended) {
      // A refusal: our side of the stream ends too, then the call.
      f.Clear();
      f.mutable_end();
      const bool sent = co_await gb::write(*w.stream, f);
      if (sent) co_await gb::op([&](void* tag) { w.stream->WritesDone(tag); });
      co_await tunnel->close();
      co_return tunnel;
    }
  }
  w.ctx.TryCancel();
  grpc::Status st;
  co_await gb::op([&](void* tag) { w.stream->Finish(&st, tag); });
  w.finished = true;
  if (failure) throw *failure;
  throw_no_answer(timed_out, anything, st, head_timeout, im.address, "no answer to the WebSocket upgrade");
}

asio::awaitable<void> RelayClient::watch_config(std::string client_id, std::function<std::uint64_t()> known,
                                                std::function<void(policy::v1::Snapshot&&)> on_snapshot) {
  auto& im = *impl_;
  im.watcher = std::make_unique<gb::SnapshotWatcher>(im.ex, "broker", im.address, std::move(client_id));
  co_await im.watcher->run(
      [&im](grpc::ClientContext* ctx, const policy::v1::WatchRequest& req) {
        return im.stub->PrepareAsyncWatchConfig(ctx, req, im.pump->cq());
      },
      std::move(known), std::move(on_snapshot));
}

void RelayClient::stop_watch() {
  if (impl_->watcher) impl_->watcher->stop();
}

}  // namespace postern::edge
