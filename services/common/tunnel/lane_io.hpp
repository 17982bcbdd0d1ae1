#pragma once
// The gRPC streams under lanes: a client's (Relay.Lane from an edge,
// Registration.Lane from a connector) and a server's (the broker's). Include
// only in .cpp files (gRPC headers).

#include <grpcpp/client_context.h>
#include <grpcpp/server_context.h>
#include <grpcpp/support/async_stream.h>

#include <memory>

#include "common/grpc/bridge.hpp"
#include "common/tunnel/lane.hpp"
#include "postern/tunnel/v1/tunnel.pb.h"

namespace postern::tunnel {

/// A client call: prepared (not started) on `ctx`; started by the first
/// write (its headers go with the first message: the context must have been
/// corked), finished in finish().
class ClientLaneIo final : public LaneIo {
 public:
  using Stream = grpc::ClientAsyncReaderWriter<tunnel::v1::LaneMessage, tunnel::v1::LaneMessage>;
  ClientLaneIo(std::unique_ptr<grpc::ClientContext> ctx, std::unique_ptr<Stream> stream)
      : ctx_(std::move(ctx)), stream_(std::move(stream)) {
    grpc_bridge::start_detached(*stream_);
  }
  asio::awaitable<bool> read(tunnel::v1::LaneMessage& m) override { return grpc_bridge::read(*stream_, m); }
  asio::awaitable<bool> write(const tunnel::v1::LaneMessage& m) override { return grpc_bridge::write(*stream_, m); }
  void cancel() override { ctx_->TryCancel(); }
  asio::awaitable<void> finish() override {
    co_await grpc_bridge::op([&](void* tag) { stream_->Finish(&status_, tag); });
  }
  asio::awaitable<void> close_writes() override {
    co_await grpc_bridge::op([&](void* tag) { stream_->WritesDone(tag); });
  }
  const grpc::Status& status() const { return status_; }
  grpc::ClientContext& context() { return *ctx_; }

 private:
  std::unique_ptr<grpc::ClientContext> ctx_;
  std::unique_ptr<Stream> stream_;
  grpc::Status status_;
};

/// A server call the broker accepted (its context and stream owned here).
class ServerLaneIo final : public LaneIo {
 public:
  using Stream = grpc::ServerAsyncReaderWriter<tunnel::v1::LaneMessage, tunnel::v1::LaneMessage>;
  ServerLaneIo() : stream_(&ctx_) {}
  grpc::ServerContext& context() { return ctx_; }
  Stream& stream() { return stream_; }
  asio::awaitable<bool> read(tunnel::v1::LaneMessage& m) override { return grpc_bridge::read(stream_, m); }
  asio::awaitable<bool> write(const tunnel::v1::LaneMessage& m) override { return grpc_bridge::write(stream_, m); }
  void cancel() override { ctx_.TryCancel(); }
  /// Ends the call with `status` (OK unless set_status() said otherwise).
  asio::awaitable<void> finish() override {
    if (finished_) co_return;
    finished_ = true;
    co_await grpc_bridge::op([&](void* tag) { stream_.Finish(status_, tag); });
  }
  /// Finish with OK now: the client reads what was written, then the end
  /// (a read still pending here then fails).
  asio::awaitable<void> close_writes() override { co_await finish(); }
  void set_status(grpc::Status s) { status_ = std::move(s); }

 private:
  grpc::ServerContext ctx_;
  Stream stream_;
  grpc::Status status_ = grpc::Status::OK;
  bool finished_ = false;
};

}  // namespace postern::tunnel
