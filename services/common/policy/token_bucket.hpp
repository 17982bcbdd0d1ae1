#pragma once
// Request-rate limiting: the arithmetic, no clocks or locks of its own.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <limits>
#include <stdexcept>

namespace postern::policy {

/// Token bucket for request-rate limits. Not thread-safe (one per executor).
/// Time is whatever the caller passes in, so tests drive it with plain time
/// points; a time point earlier than one already seen is treated as "no time
/// passed".
class TokenBucket {
 public:
  using Clock = std::chrono::steady_clock;

  /// `rate` tokens per `per`, holding at most `burst` (>= 1); starts full.
  /// Throws std::invalid_argument if rate or burst is 0 or per is not positive.
  TokenBucket(std::uint32_t rate, Clock::duration per, std::uint32_t burst, Clock::time_point now) : last_(now) {
    set_parameters(rate, per, burst);
    fill_ = capacity();
  }

  struct Result {
    bool allowed;
    std::uint32_t remaining;           ///< whole tokens left after this request
    std::chrono::seconds retry_after;  ///< when refused: until one token is back (rounded up, >= 1); else 0
    std::chrono::seconds reset;        ///< until the bucket is full again (rounded up)
  };

  /// Takes one token if there is one.
  Result take(Clock::time_point now) {
    refill(now);
    Result r{};
    if (fill_ >= one_token()) {
      fill_ -= one_token();
      r.allowed = true;
      r.retry_after = std::chrono::seconds(0);
    } else {
      r.allowed = false;
      r.retry_after = std::max(std::chrono::seconds(1), ceil_seconds(ticks_to_gain(one_token() - fill_)));
    }
    r.remaining = static_cast<std::uint32_t>(fill_ / one_token());
    r.reset = ceil_seconds(ticks_to_gain(capacity() - fill_));
    return r;
  }

  /// Changes the parameters keeping the current fill (clamped to the new burst).
  /// Fill accrued so far is counted at the old rate. Same preconditions as the constructor.
  void reconfigure(std::uint32_t rate, Clock::duration per, std::uint32_t burst, Clock::time_point now) {
    refill(now);
    const Units old_per = per_;
    set_parameters(rate, per, burst);
    // Same number of tokens (fractions included), expressed in the new unit.
    fill_ = std::min(capacity(), fill_ * per_ / old_per);
  }

 private:
  // Fill is kept exactly, in "token-ticks": one token is `per_` units and
  // every clock tick adds `rate_` units. 128 bits hold burst * per and
  // ticks * rate for any 32-bit rate/burst and 63-bit tick counts.
  __extension__ using Units = unsigned __int128;  // __extension__: quiet under -Wpedantic

  void set_parameters(std::uint32_t rate, Clock::duration per, std::uint32_t burst) {
    if (rate == 0) throw std::invalid_argument("token bucket: rate must be at least 1");
    if (burst == 0) throw std::invalid_argument("token bucket: burst must be at least 1");
    if (per <= Clock::duration::zero()) throw std::invalid_argument("token bucket: period must be positive");
    rate_ = rate;
    per_ = static_cast<Units>(per.count());
    burst_ = burst;
  }

  Units one_token() const { return per_; }
  Units capacity() const { return per_ * burst_; }

  void refill(Clock::time_point now) {
    if (now <= last_) return;
    const auto ticks = static_cast<Units>((now - last_).count());
    fill_ = std::min(capacity(), fill_ + ticks * rate_);
    last_ = now;
  }

  // Clock ticks until `units` more have accrued.
  Units ticks_to_gain(Units units) const { return (units + rate_ - 1) / rate_; }

  static std::chrono::seconds ceil_seconds(Units ticks) {
    using P = Clock::period;
    const Units s = (ticks * P::num + P::den - 1) / P::den;
    constexpr auto kMax = static_cast<Units>(std::numeric_limits<std::chrono::seconds::rep>::max());
    return std::chrono::seconds(static_cast<std::chrono::seconds::rep>(std::min(s, kMax)));
  }

  Units rate_ = 1;
  Units per_ = 1;
  Units burst_ = 1;
  Units fill_ = 0;
  Clock::time_point last_;
};

}  // namespace postern::policy
