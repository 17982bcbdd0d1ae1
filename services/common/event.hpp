#pragma once
// One-shot and resettable signals for coroutines on one executor.

#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <vector>

#include "common/asio.hpp"

namespace postern {

/// A level-triggered flag coroutines can wait on. Not thread-safe: every call
/// happens on the executor the Event was made with.
class Event {
 public:
  explicit Event(asio::any_io_executor ex) : timer_(ex, asio::steady_timer::time_point::max()) {}

  void set() {
    set_ = true;
    timer_.cancel();
  }
  void reset() {
    set_ = false;
    timer_.expires_at(asio::steady_timer::time_point::max());
  }
  bool is_set() const { return set_; }

  /// Waits until set. Returns at once if already set.
  asio::awaitable<void> wait() {
    while (!set_) {
      co_await timer_.async_wait(use_nothrow);
    }
  }

  /// Waits until set or until `timeout` passes; returns is_set().
  asio::awaitable<bool> wait_for(std::chrono::steady_clock::duration timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    asio::steady_timer limit(timer_.get_executor(), deadline);
    auto* self = this;
    // The limit wakes the waiter by cancelling the shared timer; a wake that
    // is not ours (set) or not the limit is re-checked against the clock.
    // The timer's expiry stays at max: setting it again here would cancel
    // the other waiters' waits, and theirs ours, in a loop until a limit.
    limit.async_wait([self, alive = alive_](boost::system::error_code ec) {
      if (!ec && *alive) self->timer_.cancel();
    });
    while (!set_ && std::chrono::steady_clock::now() < deadline) {
      co_await timer_.async_wait(use_nothrow);
    }
    limit.cancel();
    co_return set_;
  }

  ~Event() { *alive_ = false; }

 private:
  asio::steady_timer timer_;
  bool set_ = false;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

/// Runs `on_expire` once unless disarmed first. Disarmed by destruction or
/// disarm(); the callback never runs after that. rearm() moves the expiry.
/// Not thread-safe: use on the executor it was made with.
class Deadline {
 public:
  using Clock = std::chrono::steady_clock;

  template <class F>
  Deadline(asio::any_io_executor ex, Clock::duration timeout, F on_expire)
      : state_(std::make_shared<State>(ex, Clock::now() + timeout, std::move(on_expire))) {
    arm(state_);
  }
  ~Deadline() { disarm(); }
  Deadline(const Deadline&) = delete;
  Deadline& operator=(const Deadline&) = delete;

  void rearm(Clock::duration timeout) {
    if (!state_->alive) return;
    const auto expiry = Clock::now() + timeout;
    const bool sooner = expiry < state_->expiry;
    state_->expiry = expiry;
    // A later expiry is picked up when the pending wait fires; a sooner one
    // needs the wait restarted.
    if (sooner) {
      state_->generation++;
      state_->timer.cancel();
      arm(state_);
    }
  }
  void disarm() {
    if (!state_->alive) return;
    state_->alive = false;
    state_->timer.cancel();
  }
  bool expired() const { return state_->fired; }

 private:
  struct State {
    State(asio::any_io_executor ex, Clock::time_point e, std::function<void()> f)
        : timer(ex), expiry(e), on_expire(std::move(f)) {}
    asio::steady_timer timer;
    Clock::time_point expiry;
    std::function<void()> on_expire;
    bool alive = true;
    bool fired = false;
    unsigned generation = 0;
  };

  static void arm(const std::shared_ptr<State>& s) {
    s->timer.expires_at(s->expiry);
    s->timer.async_wait([s, gen = s->generation](boost::system::error_code) {
      if (!s->alive || gen != s->generation) return;
      if (Clock::now() < s->expiry) {
        arm(s);
        return;
      }
      s->alive = false;
      s->fired = true;
      auto f = std::move(s->on_expire);
      f();
    });
  }

  std::shared_ptr<State> state_;
};

}  // namespace postern

namespace postern {

/// A mutex for coroutines on one executor: lock() waits its turn (FIFO),
/// unlock() hands the lock to the next waiter. Used where two coroutines
/// may write to one stream that allows a single outstanding write.
class AsyncMutex {
 public:
  explicit AsyncMutex(asio::any_io_executor ex) : ex_(std::move(ex)) {}

  asio::awaitable<void> lock() {
    if (!locked_) {
      locked_ = true;
      co_return;
    }
    asio::steady_timer t(ex_, asio::steady_timer::time_point::max());
    waiters_.push_back(&t);
    // unlock() cancels this timer and passes the lock on: still locked_.
    co_await t.async_wait(use_nothrow);
  }
  void unlock() {
    if (waiters_.empty()) {
      locked_ = false;
      return;
    }
    auto* next = waiters_.front();
    waiters_.erase(waiters_.begin());
    next->cancel();
  }

 private:
  asio::any_io_executor ex_;
  bool locked_ = false;
  // In arrival order. A vector: nothing is allocated until someone waits
  // (a deque allocates about 600 bytes as it is made, and a relayed
  // WebSocket session holds two of these in each service).
  std::vector<asio::steady_timer*> waiters_;
};

}  // namespace postern
