#pragma once
// Exchanges in flight at the edge (a WebSocket session counts until it
// ends): the gauge, and an event a drain waits on.
//
// Single-threaded: the edge's executor.

#include <prometheus/gauge.h>

#include <chrono>
#include <cstddef>

#include "common/event.hpp"

namespace postern::edge {

class InFlight {
 public:
  InFlight(asio::any_io_executor ex, prometheus::Gauge& gauge) : gauge_(gauge), idle_(ex) { idle_.set(); }

  void begin() {
    ++count_;
    idle_.reset();
    gauge_.Increment();
  }
  void end() {
    gauge_.Decrement();
    if (--count_ == 0) idle_.set();
  }
  std::size_t count() const { return count_; }

  /// Waits until nothing is in flight, at most `timeout`; true if nothing is.
  asio::awaitable<bool> idle_within(std::chrono::steady_clock::duration timeout) { return idle_.wait_for(timeout); }

 private:
  prometheus::Gauge& gauge_;
  Event idle_;
  std::size_t count_ = 0;
};

}  // namespace postern::edge
