#pragma once
// Server side of a snapshot watch (policy Watch -> connectors, broker
// WatchConfig -> edges): every watcher gets the current signed snapshot at
// once unless it says it has that version, then each one published after
// it, newer or not (the source decides what is current: a broker falls back
// when the connector that relayed the newest one leaves), until it goes away
// or the fanout closes. Include only in .cpp files (gRPC headers).

#include <grpcpp/server_context.h>
#include <grpcpp/support/async_stream.h>

#include <functional>
#include <memory>
#include <set>
#include <string>

#include "common/event.hpp"
#include "common/grpc/bridge.hpp"
#include "common/observability/log.hpp"
#include "postern/policy/v1/policy.pb.h"

namespace postern::grpc_bridge {

/// Single-threaded: use on the executor it was made with.
class SnapshotFanout {
 public:
  using Snapshot = policy::v1::SignedSnapshot;

  /// `peer` names the watchers in logs ("connector", "edge"). With
  /// `announce_empty`, a watcher is told "version 0" at once while there is
  /// no snapshot yet (no bytes), so it can tell "nothing yet" from "no
  /// answer".
  SnapshotFanout(asio::any_io_executor ex, std::string peer, bool announce_empty)
      : ex_(std::move(ex)), peer_(std::move(peer)), announce_empty_(announce_empty) {}

  /// Makes `s` (version `version`) the current snapshot; every watcher gets it.
  void publish(std::shared_ptr<const Snapshot> s, std::uint64_t version) {
    current_ = std::move(s);
    version_ = version;
    for (auto* c : calls_) c->wake.set();
  }
  const std::shared_ptr<const Snapshot>& current() const { return current_; }
  std::uint64_t version() const { return version_; }
  std::size_t watchers() const { return calls_.size(); }
  /// Called with the watcher count whenever it changes.
  std::function<void(std::size_t)> on_watchers;

  /// Ends every watch (they finish with UNAVAILABLE) and refuses new ones.
  void close() {
    closed_ = true;
    for (auto* c : calls_) c->wake.set();
  }

  /// Accept loop. `request(ctx, request_msg, writer, tag)` arms one
  /// RequestX call on the server's queue. Ends when the queue shuts down.
  template <class Request>
  asio::awaitable<void> accept(Request request) {
    for (;;) {
      auto call = std::make_shared<Call>(ex_);
      notify_when_done(call->ctx, ex_, [call] {
        call->gone = true;
        call->wake.set();
      });
      const bool ok = co_await op([&](void* tag) { request(&call->ctx, &call->request, &call->writer, tag); });
      if (!ok) co_return;
      asio::co_spawn(ex_, serve(call), asio::detached);
    }
  }

 private:
  struct Call {
    explicit Call(asio::any_io_executor ex) : wake(ex) {}
    grpc::ServerContext ctx;
    policy::v1::WatchRequest request;
    grpc::ServerAsyncWriter<Snapshot> writer{&ctx};
    Event wake;
    bool gone = false;
  };

  asio::awaitable<void> serve(std::shared_ptr<Call> call) {
    calls_.insert(call.get());
    if (on_watchers) on_watchers(calls_.size());
    const std::string client = call->request.client_id();
    POSTERN_LOG(info, "watcher connected")
        .kv("peer", peer_)
        .kv("client", client)
        .kv("known_version", call->request.known_version());
    // What the watcher holds (kept alive, so that a new snapshot is never
    // taken for it): nothing sent yet, but the version it named counts.
    std::shared_ptr<const Snapshot> sent;
    if (current_ && version_ == call->request.known_version()) sent = current_;
    bool told_empty = false;
    for (;;) {
      call->wake.reset();
      if (call->gone || closed_) break;
      if (current_ && current_ != sent) {
        const auto snap = current_;  // alive across the write
        const bool ok = co_await write(call->writer, *snap);
        if (!ok) break;
        sent = snap;
        continue;
      }
      if (!current_ && announce_empty_ && !told_empty) {
        told_empty = true;
        const Snapshot empty;
        const bool ok = co_await write(call->writer, empty);
        if (!ok) break;
        continue;
      }
      co_await call->wake.wait();
    }
    calls_.erase(call.get());
    if (on_watchers) on_watchers(calls_.size());
    POSTERN_LOG(info, "watcher disconnected").kv("peer", peer_).kv("client", client);
    const grpc::Status st = closed_ ? grpc::Status(grpc::StatusCode::UNAVAILABLE, "shutting down") : grpc::Status::OK;
    co_await op([&](void* tag) { call->writer.Finish(st, tag); });
  }

  asio::any_io_executor ex_;
  std::string peer_;
  bool announce_empty_;
  bool closed_ = false;
  std::shared_ptr<const Snapshot> current_;
  std::uint64_t version_ = 0;
  std::set<Call*> calls_;
};

}  // namespace postern::grpc_bridge
