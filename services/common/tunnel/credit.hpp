#pragma once
// Per-exchange flow control (tunnel.proto, "Credit"): body and WebSocket
// message bytes cross only as far as the receiver has granted. Each
// direction of an exchange has a sender's SendCredit, a receiver's
// ReceiveWindow, and, at the broker in between, a CreditCount that checks
// the sender keeps to what the receiver granted.
//
// Single-threaded: use on one executor.

#include <prometheus/counter.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <optional>

#include "common/event.hpp"

namespace postern::tunnel {

/// What a sender may send before any grant (both directions, every
/// exchange): the protocol's constant, known to all three hops.
inline constexpr std::uint64_t kInitialCredit = 64u << 10;
/// Largest body piece in one frame.
inline constexpr std::size_t kBodyPieceBytes = 256u << 10;
/// Largest WebSocket message piece in one frame.
inline constexpr std::size_t kWsPieceBytes = 64u << 10;

/// The sender's side: bytes it may still send.
class SendCredit {
 public:
  /// `waited` (if given) counts the seconds spent waiting for credit.
  SendCredit(asio::any_io_executor ex, prometheus::Counter* waited = nullptr)
      : available_(static_cast<std::int64_t>(kInitialCredit)), wake_(std::move(ex)), waited_(waited) {}
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
  void grant(std::uint64_t n) {
    available_ = std::min<std::int64_t>(available_ + static_cast<std::int64_t>(std::min<std::uint64_t>(n, kMaxGrant)),
                                        kMaxGrant);
    wake_.set();
  }
  /// No more waiting: the exchange is over (a writer waiting gives up).
  void release() {
    released_ = true;
    wake_.set();
  }
  std::int64_t available() const { return available_; }

 private:
  static constexpr std::int64_t kMaxGrant = std::int64_t{1} << 50;
  std::int64_t available_;
  bool released_ = false;
  Event wake_;
  prometheus::Counter* waited_;
};

/// The receiver's side: how much to grant back, and when.
class ReceiveWindow {
 public:
  /// `window`: bytes the receiver lets the sender have in flight (at least
  /// kInitialCredit).
  explicit ReceiveWindow(std::uint64_t window)
      : window_(std::max(window, kInitialCredit)), step_(std::clamp<std::uint64_t>(window_ / 4, 16u << 10, kGrantStep)) {}
  /// Grants go back at least every this many bytes consumed: below the
  /// smallest cap a relay may put on what is outstanding (64 KiB), so that
  /// a relay dropping what is over its cap never stalls the flow.
  static constexpr std::uint64_t kGrantStep = 32u << 10;
  /// The grant that opens the window past the initial credit (0: none).
  std::uint64_t opening_grant() const { return window_ - kInitialCredit; }
  /// The local consumer took `n` bytes; returns the credit to grant now (0:
  /// wait for more, so that grants go in steps, not per piece).
  std::uint64_t consumed(std::size_t n) {
    taken_ += n;
    if (taken_ < step_) return 0;
    const std::uint64_t g = taken_;
    taken_ = 0;
    return g;
  }

 private:
  std::uint64_t window_;
  std::uint64_t step_;
  std::uint64_t taken_ = 0;
};

/// A relay's count of what a sender may still send, kept as the sender
/// keeps it (SendCredit): it goes below zero after a piece larger than what
/// was left. The relay sees a grant before the sender does, so its count is
/// never below the sender's: a piece that arrives when it is not above zero
/// broke the protocol.
///
/// With a cap, at most `cap` may be outstanding: what a grant offers beyond
/// it is dropped, not passed on. The sender then never runs more than the
/// cap ahead of the receiver's consumer, whatever window the receiver
/// opened; the receiver's next grants (ReceiveWindow: in steps smaller than
/// any cap) keep the flow going.
class CreditCount {
 public:
  /// Takes a data piece of `n` bytes. False: the sender had no credit left.
  bool take(std::size_t n) {
    if (may_send_ <= 0) return false;
    may_send_ -= static_cast<std::int64_t>(n);
    return true;
  }
  /// A grant passed on, saturating whatever the peer claims. Returns what
  /// may be passed on: at most `cap` may be outstanding (0: no cap).
  std::uint64_t give(std::uint64_t n, std::uint64_t cap = 0) {
    std::uint64_t pass = std::min<std::uint64_t>(n, static_cast<std::uint64_t>(kMax));
    if (cap > 0) {
      const std::int64_t room = static_cast<std::int64_t>(cap) - may_send_;
      pass = room <= 0 ? 0 : std::min<std::uint64_t>(pass, static_cast<std::uint64_t>(room));
    }
    may_send_ = std::min<std::int64_t>(may_send_ + static_cast<std::int64_t>(pass), kMax);
    return pass;
  }
  std::int64_t may_send() const { return may_send_; }

 private:
  static constexpr std::int64_t kMax = std::int64_t{1} << 50;
  std::int64_t may_send_ = static_cast<std::int64_t>(kInitialCredit);
};

}  // namespace postern::tunnel
