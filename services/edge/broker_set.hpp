#pragma once
// The edge's brokers: every address the broker names resolve to (again
// every resolve_interval, and sooner after a failure), each with its gRPC
// channel and its lanes (Relay.Lane), kept open: a lane that ends is opened
// again. And the order in which an exchange tries them (a plan). The
// exchanges themselves, and failover between brokers, are RelayClient's.
//
// Include only in the edge's relay .cpp files (gRPC headers). Use on the
// executor it was made with.

#include <grpcpp/channel.h>
#include <grpcpp/security/credentials.h>

#include <algorithm>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "common/event.hpp"
#include "common/grpc/bridge.hpp"
#include "common/tunnel/endpoint.hpp"
#include "postern/config/v1/config.pb.h"
#include "postern/tunnel/v1/tunnel.grpc.pb.h"

namespace prometheus {
class Registry;
class Gauge;
class Histogram;
}  // namespace prometheus

namespace postern::edge {

// When no lane to a broker is up, the last broker tried is waited for this
// long: a broker restarting while the other one drains is then a short
// wait, not a 502. Longer than gRPC's longest reconnect backoff (1 s,
// jittered by 20 %), so a broker that is back is reached; short enough that
// no broker at all still fails fast.
inline constexpr std::chrono::milliseconds kWaitForBroker{1500};

// One broker address: its channel, its lanes, and how it fared lately.
struct BrokerLink {
  std::string name;    // host:port as configured
  std::string target;  // ipv4:a.b.c.d:port (what the channel dials)
  std::string shown;   // for messages: the name, and the address if it differs
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<tunnel::v1::Relay::Stub> stub;
  std::chrono::steady_clock::time_point avoid_until{};
  std::vector<std::shared_ptr<tunnel::Endpoint>> lanes;
  std::unique_ptr<Event> lane_changed;  // a lane came up, or ended
  bool stopped = false;
  // A lane of it ended with a drain mark, and none has come up since
  // without one: it is going away or restarting (tried last).
  bool drained = false;

  // The up lane with the fewest exchanges, or null.
  std::shared_ptr<tunnel::Endpoint> usable_lane() const {
    std::shared_ptr<tunnel::Endpoint> best;
    for (const auto& l : lanes) {
      if (!l->usable() || !l->lane().up()) continue;
      if (!best || l->exchanges() < best->exchanges()) best = l;
    }
    return best;
  }
  /// Its lanes are up and all announced a drain: it refuses new exchanges.
  bool draining_now() const {
    return !lanes.empty() && std::all_of(lanes.begin(), lanes.end(), [](const auto& l) { return l->draining(); });
  }
  /// Draining now, or drained and not back yet: plans try it last.
  bool draining() const { return drained || draining_now(); }
  void stop() {
    stopped = true;
    for (auto& l : lanes) l->lane().abort();
  }
};

struct BrokerSet {
  using Clock = std::chrono::steady_clock;

  /// Validates cfg (throws std::runtime_error naming the field: no broker,
  /// not host:port, bad TLS material), starts the completion-queue pump and
  /// the resolution loop. `metrics` (may be null) gets the broker and lane
  /// gauges. TLS files are read again every `file_check_interval`.
  static std::shared_ptr<BrokerSet> start(asio::any_io_executor ex, const config::v1::RelayClient& cfg,
                                          prometheus::Registry* metrics, std::chrono::seconds file_check_interval);
  /// Stops resolving, and every broker's lanes.
  void stop();

  /// Every broker once, starting one further round the ring each call:
  /// those with a lane up first, then those that failed lately or are
  /// connecting, then those whose channel is down (a last resort, not
  /// skipped: they may be back), then those draining (they refuse new
  /// exchanges; tried only so that the answer says so).
  std::vector<std::shared_ptr<BrokerLink>> plan();
  /// The broker's channel is down (connecting failed, or shut down).
  static bool down(const BrokerLink& b);
  /// Ranks `b` after the others for `d`, and asks for an early resolution.
  void avoid(BrokerLink& b, Clock::duration d);
  /// UPSTREAM_UNREACHABLE: no broker address is known.
  [[noreturn]] void throw_unresolved() const;
  /// A lane of `b` that is up: at once, or (`wait`: the last broker of a
  /// plan) one that comes up within kWaitForBroker. Null if none.
  asio::awaitable<std::shared_ptr<tunnel::Endpoint>> lane_of(BrokerLink& b, bool wait);

  asio::any_io_executor ex;
  config::v1::RelayClient cfg;
  std::vector<std::string> names;  // address, then addresses
  std::string names_text;
  std::shared_ptr<grpc::ChannelCredentials> creds;
  std::unique_ptr<grpc_bridge::Pump> pump;
  std::vector<std::shared_ptr<BrokerLink>> brokers;
  std::size_t cursor = 0;
  Clock::duration resolve_interval;
  std::unique_ptr<Event> resolved;     // set after the first resolution that found a broker
  std::unique_ptr<Event> resolve_now;  // a failure asks for an early resolution
  std::string resolve_error;
  bool stopped = false;
  std::size_t lanes_per_broker = 1;
  tunnel::Endpoint::Options lane_options;
  prometheus::Gauge* known = nullptr;
  prometheus::Gauge* lanes_gauge = nullptr;
  prometheus::Histogram* frames_per_message = nullptr;

 private:
  static asio::awaitable<void> keep_lane(std::shared_ptr<BrokerSet> self, std::shared_ptr<BrokerLink> b);
  std::shared_ptr<BrokerLink> make_link(const std::string& name, const std::string& host,
                                        const asio::ip::tcp::endpoint& ep, const std::string& target);
  asio::awaitable<void> resolve_once(std::shared_ptr<BrokerSet> self, asio::ip::tcp::resolver& resolver);
  static asio::awaitable<void> resolve_loop(std::shared_ptr<BrokerSet> self);
};

}  // namespace postern::edge
