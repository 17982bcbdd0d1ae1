#pragma once
// Steady HTTP load for reliability tests: a few client threads, each sending
// one request per connection in a loop, with every outcome recorded (when it
// started, how long it took, what came back) so tests can assert on failure
// latencies and on when failures stopped.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace postern::testing {

/// One request/response over a fresh connection to 127.0.0.1:port.
struct Exchange {
  bool connected = false;  ///< false: the connect was refused (or timed out)
  bool reset = false;      ///< the peer reset the connection
  bool timed_out = false;  ///< `timeout` passed before the peer closed
  std::string raw;         ///< bytes received
};

/// Connects, sends `request`, reads until the peer closes, resets, or
/// `timeout` passes. Blocking; thread-safe.
Exchange http_exchange(std::uint16_t port, const std::string& request, std::chrono::milliseconds timeout);

/// Client threads in a loop, one request per connection ("Connection:
/// close"), behind a round-robin "load balancer": each request goes to the
/// next port in `ports`, and a refused connection moves on to the next port
/// (as a load balancer does with a backend that is down) without counting as
/// a failure; only when every port refused is it one.
///
/// start() and stop() from one thread; ok()/failed() from any.
class Load {
 public:
  using Clock = std::chrono::steady_clock;
  struct Record {
    Clock::time_point start, end;
    std::uint16_t port = 0;  ///< where it was answered (last tried if none)
    int status = 0;          ///< 0: no parsable response
    bool reset = false, timed_out = false, refused = false;
    std::string raw;  ///< the first bytes received, for failures only
    std::chrono::milliseconds latency() const {
      return std::chrono::duration_cast<std::chrono::milliseconds>(end - start);
    }
  };

  ~Load() { stop(); }

  /// `threads` loops sending GET `path` until stop() (or `max_run`).
  void start(std::vector<std::uint16_t> ports, const std::string& path, int threads,
             std::chrono::milliseconds request_timeout = std::chrono::seconds(10),
             std::chrono::milliseconds max_run = std::chrono::seconds(60));
  /// Stops the loops and joins them (each finishes its current request).
  void stop();

  int ok() const { return ok_; }
  int failed() const { return failed_; }
  /// Every outcome so far, in no particular order (copy, under the lock).
  std::vector<Record> records() const;
  /// Requests that did not get a 200.
  std::vector<Record> failures() const;
  /// A few failures, one a line, for assertion messages.
  std::string describe_failures(std::size_t max = 8) const;

 private:
  std::vector<std::uint16_t> ports_;
  std::atomic<std::uint64_t> next_{0};
  std::atomic<int> ok_{0}, failed_{0};
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
  mutable std::mutex mu_;
  std::vector<Record> records_;
  Clock::time_point t0_;
};

/// Milliseconds from `from` to `to` (negative if `to` is earlier).
long long ms_between(Load::Clock::time_point from, Load::Clock::time_point to);

}  // namespace postern::testing
