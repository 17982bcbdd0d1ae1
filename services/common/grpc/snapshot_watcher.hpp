#pragma once
// Client side of a snapshot watch (connector -> policy Watch, edge -> broker
// WatchConfig): keeps one server stream open, hands each snapshot to a
// callback, reconnects with backoff. Include only in .cpp files (gRPC headers).

#include <grpcpp/client_context.h>
#include <grpcpp/support/async_stream.h>

#include <boost/asio/steady_timer.hpp>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <utility>

#include "common/grpc/bridge.hpp"
#include "common/observability/log.hpp"
#include "postern/policy/v1/policy.pb.h"

namespace postern::grpc_bridge {

/// Single-threaded: use on the executor it was made with.
class SnapshotWatcher {
 public:
  using Snapshot = policy::v1::SignedSnapshot;
  using Reader = grpc::ClientAsyncReader<Snapshot>;

  /// `peer` and `address` name the far side in logs.
  SnapshotWatcher(asio::any_io_executor ex, std::string peer, std::string address, std::string client_id)
      : ex_(std::move(ex)), peer_(std::move(peer)), address_(std::move(address)), client_id_(std::move(client_id)) {}

  /// Runs until stop(). `start(ctx, request)` prepares the call (not yet
  /// started); `known()` is the version the caller holds; `on_snapshot` gets
  /// each snapshot received.
  template <class Start>
  asio::awaitable<void> run(Start start, std::function<std::uint64_t()> known,
                            std::function<void(Snapshot&&)> on_snapshot) {
    asio::steady_timer timer(ex_);
    std::chrono::milliseconds backoff{100};
    std::mt19937 rng{std::random_device{}()};
    while (!stopped_) {
      grpc::ClientContext ctx;
      ctx_ = &ctx;
      policy::v1::WatchRequest req;
      req.set_client_id(client_id_);
      req.set_known_version(known());
      std::unique_ptr<Reader> reader = start(&ctx, req);
      bool ok = co_await op([&](void* tag) { reader->StartCall(tag); });
      std::size_t received = 0;
      while (ok) {
        Snapshot s;
        ok = co_await op([&](void* tag) { reader->Read(&s, tag); });
        if (!ok) break;
        if (received++ == 0) POSTERN_LOG(info, "watching snapshots").kv("peer", peer_).kv("address", address_);
        backoff = std::chrono::milliseconds(100);
        on_snapshot(std::move(s));
      }
      grpc::Status st;
      co_await op([&](void* tag) { reader->Finish(&st, tag); });
      ctx_ = nullptr;
      if (on_end) on_end(st);
      if (stopped_) break;
      if (std::exchange(restart_, false)) continue;
      POSTERN_LOG(warn, "snapshot stream ended, reconnecting")
          .kv("peer", peer_)
          .kv("address", address_)
          .kv("code", static_cast<int>(st.error_code()))
          .kv("error", st.error_message());
      std::uniform_real_distribution<double> jitter(0.5, 1.5);
      timer.expires_after(std::chrono::duration_cast<std::chrono::milliseconds>(backoff * jitter(rng)));
      co_await timer.async_wait(use_nothrow);
      backoff = std::min(backoff * 2, std::chrono::milliseconds(2000));
    }
  }

  /// Names the far side in later logs (a caller that moves between peers).
  void set_address(std::string address) { address_ = std::move(address); }
  /// Optional: told how each stream ended, before the reconnect.
  std::function<void(const grpc::Status&)> on_end;

  void stop() {
    stopped_ = true;
    if (ctx_) ctx_->TryCancel();
  }

  /// Ends the current stream; the next one starts at once.
  void restart() {
    restart_ = true;
    if (ctx_) ctx_->TryCancel();
  }

 private:
  asio::any_io_executor ex_;
  std::string peer_, address_, client_id_;
  bool stopped_ = false;
  bool restart_ = false;
  grpc::ClientContext* ctx_ = nullptr;
};

}  // namespace postern::grpc_bridge
