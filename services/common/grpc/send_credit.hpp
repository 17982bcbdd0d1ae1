#pragma once
// One exchange's send credit (tunnel.proto, Credit): the response bytes a
// connector may still send before the broker has passed more on to the
// edge. Taken by response bodies (connector) and by a WebSocket session's
// messages toward the client (FramePort), and by either side's messages on
// a shared session (MuxSession).

#include <prometheus/counter.h>

#include <chrono>
#include <cstdint>

#include "common/event.hpp"

namespace postern::grpc_bridge {

class SendCredit {
 public:
  /// `waited` (if given) counts the seconds spent waiting for credit.
  SendCredit(asio::any_io_executor ex, std::uint64_t bytes, prometheus::Counter* waited)
      : available_(static_cast<std::int64_t>(bytes)), wake_(std::move(ex)), waited_(waited) {}
  SendCredit(const SendCredit&) = delete;
  SendCredit& operator=(const SendCredit&) = delete;

  /// Waits until some credit is left (or the exchange was let go), then
  /// takes `n`: a piece larger than what is left still goes.
  asio::awaitable<void> take(std::size_t n) {
    if (available_ <= 0 && !released_) {
      const auto since = std::chrono::steady_clock::now();
      while (available_ <= 0 && !released_) {
        wake_.reset();
        co_await wake_.wait();
      }
      if (waited_) waited_->Increment(std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count());
    }
    available_ -= static_cast<std::int64_t>(n);
  }
  /// Sets what is available, before anything was taken.
  void reset(std::uint64_t bytes) { available_ = static_cast<std::int64_t>(bytes); }
  void grant(std::uint64_t n) {
    available_ += static_cast<std::int64_t>(n);
    wake_.set();
  }
  /// No more waiting: the broker is done with the exchange, its Attach
  /// stream (which carries the credit) ended, or the session was aborted.
  void release() {
    released_ = true;
    wake_.set();
  }

 private:
  std::int64_t available_;
  bool released_ = false;
  Event wake_;
  prometheus::Counter* waited_;
};

}  // namespace postern::grpc_bridge
