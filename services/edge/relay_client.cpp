#include "edge/relay_client.hpp"

#include <grpcpp/grpcpp.h>

#include "common/event.hpp"
#include "common/grpc/bridge.hpp"
#include "common/grpc/channel.hpp"
#include "common/grpc/snapshot_watcher.hpp"
#include "postern/tunnel/v1/tunnel.grpc.pb.h"

namespace postern::edge {

namespace tv1 = tunnel::v1;
namespace gb = grpc_bridge;
using FrameStream = grpc::ClientAsyncReaderWriter<tv1::Frame, tv1::Frame>;

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
      } else if (f.has_error()) {
        throw ExchangeError(f.error().code(), f.error().message());
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
    if (timed_out) {
      throw ExchangeError(tv1::ERROR_CODE_UPSTREAM_TIMEOUT,
                          "no response within " + std::to_string(head_timeout.count()) + " ms");
    }
    if (!anything_received && st.error_code() == grpc::StatusCode::UNAVAILABLE) {
      throw ExchangeError(tv1::ERROR_CODE_UPSTREAM_UNREACHABLE,
                          "cannot reach the broker at " + im.address + ": " + st.error_message());
    }
    throw ExchangeError(tv1::ERROR_CODE_CONNECTOR_LOST, "the exchange ended without a response (" +
                                                            std::to_string(static_cast<int>(st.error_code())) + " " +
                                                            st.error_message() + ")");
  }
  throw ExchangeError(tv1::ERROR_CODE_CONNECTOR_LOST, "the response was cut off mid-body");
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
