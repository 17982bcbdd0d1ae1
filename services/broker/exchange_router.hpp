#pragma once
// The broker's job on the data path (tunnel.proto): every exchange an edge
// opens on one of its lanes goes to a connector serving the alias (the one
// with the fewest exchanges in flight), on that connector's least busy lane,
// under an id the broker picks there; the router then passes frames between
// (edge lane, id) and (connector lane, id'), checking each direction's order
// and credit as it goes. A frame that breaks the protocol ends its own
// exchange, both ways, never the lane; a lane that ends ends the exchanges
// it carried.
//
// No gRPC here: lanes run over LaneIo, so unit tests drive the router over
// in-memory lanes. Single-threaded: the broker's executor.

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "broker/registry.hpp"
#include "common/event.hpp"
#include "common/tunnel/credit.hpp"
#include "common/tunnel/frames.hpp"
#include "common/tunnel/lane.hpp"

namespace prometheus {
class Counter;
class Gauge;
class Histogram;
template <typename T>
class Family;
}  // namespace prometheus

namespace postern::observability {
template <class Metric>
class MetricChildren;
}  // namespace postern::observability

namespace postern::broker {

class ExchangeRouter;
struct Route;

/// The broker's end of one lane: an edge's (it opens exchanges) or a
/// connector's (the broker opens them).
class BrokerLane final : public tunnel::LaneHandler, public SessionLane {
 public:
  enum class Side { edge, connector };
  BrokerLane(ExchangeRouter& router, Side side, std::unique_ptr<tunnel::LaneIo> io, std::string who,
             std::shared_ptr<Session> session = nullptr);
  ~BrokerLane() override;

  /// Runs the lane until it ends; then every exchange on it is ended.
  asio::awaitable<void> run();
  void on_frame(tunnel::v1::Frame&& f) override;
  void on_message() override;
  bool usable() const override { return !lane_.over() && !draining_; }

  Side side() const { return side_; }
  /// The connector id, or the edge's identity: names the peer in logs.
  const std::string& who() const { return who_; }
  const std::shared_ptr<Session>& session() const { return session_; }
  tunnel::Lane& lane() { return lane_; }
  /// Takes no new exchanges; tells the far side so (LaneMessage.drain).
  void drain();
  std::size_t routes() const { return routes_.size(); }

 private:
  friend class ExchangeRouter;
  ExchangeRouter& router_;
  Side side_;
  tunnel::Lane lane_;
  std::string who_;
  std::shared_ptr<Session> session_;
  std::map<std::uint64_t, std::shared_ptr<Route>> routes_;  // by the exchange's id on this lane
  std::uint64_t next_id_ = 1;  // a connector lane: the id of the next exchange the broker opens
  bool draining_ = false;
};

/// What the router counts (the broker owns the metrics).
struct RouterMetrics {
  observability::MetricChildren<prometheus::Counter>* exchanges = nullptr;  // {alias, result}
  prometheus::Histogram* duration = nullptr;
  prometheus::Gauge* in_flight = nullptr;
  prometheus::Gauge* websocket_sessions = nullptr;
  prometheus::Counter* bytes_up = nullptr;
  prometheus::Counter* bytes_down = nullptr;
  prometheus::Counter* messages_from_edges = nullptr;
  prometheus::Counter* messages_from_connectors = nullptr;
  prometheus::Histogram* frames_per_message = nullptr;
};

class ExchangeRouter {
 public:
  struct Options {
    /// How long an exchange waits for a usable connector lane when
    /// connectors for its alias are attached but none can take it (a lane
    /// reconnecting), and at most for one to attach (RequestHead
    /// connector_wait_ms).
    std::chrono::milliseconds park_wait{5000};
    /// Bytes toward the client a connector may send ahead of what the
    /// edge's client has read, per exchange: what the edge's grants offer
    /// beyond it is dropped (CreditCount), so a slow client holds up the
    /// connector, not the DMZ.
    std::uint64_t response_window = 4u << 20;
  };

  ExchangeRouter(asio::any_io_executor ex, Registry& registry, Options options, RouterMetrics metrics);
  ~ExchangeRouter();

  asio::any_io_executor executor() const { return ex_; }
  prometheus::Histogram* frames_per_message() const { return metrics_.frames_per_message; }

  /// From now on new exchanges are refused (DRAINING) and WebSocket
  /// sessions closed with 1001 both ways; those under way run on.
  void drain();
  bool draining() const { return draining_; }
  /// Exchanges routed or waiting for a connector.
  std::size_t in_flight() const { return in_flight_; }
  /// Set whenever no exchange is in flight.
  Event& idle() { return idle_; }
  /// Lanes whose run has not returned (a closing lane counts).
  std::size_t lanes_running() const { return lanes_.size(); }
  /// Lanes open now, by side.
  std::size_t lanes(BrokerLane::Side side) const;
  /// Ends every lane after what is queued on it (the drain is over).
  void close_lanes();
  /// Ends every lane now (the broker stops).
  void abort_lanes();

 private:
  friend class BrokerLane;
  void add(BrokerLane* lane) { lanes_.push_back(lane); }
  void remove(BrokerLane* lane);
  void from_edge(BrokerLane& lane, tunnel::v1::Frame&& f);
  void from_connector(BrokerLane& lane, tunnel::v1::Frame&& f);
  void lane_ended(BrokerLane& lane);

  void open(const std::shared_ptr<Route>& r, tunnel::v1::Frame&& head);
  bool try_assign(const std::shared_ptr<Route>& r);
  asio::awaitable<void> wait_for_connector(std::shared_ptr<Route> r);
  void forward_to_connector(Route& r, tunnel::v1::Frame&& f);
  void forward_to_edge(Route& r, tunnel::v1::Frame&& f);
  void refuse(Route& r, tunnel::v1::ErrorCode code, const std::string& why);
  void violation(Route& r, const char* side, const std::string& who, const std::string& wrong);
  void end_route(Route& r, const std::string& result);
  void maybe_over(Route& r);
  bool attach_expected(const std::string& alias) const;
  void count(const Route& r, const std::string& result);
  static std::string ended_by_edge(const Route& r, const tunnel::v1::Error& e);

  asio::any_io_executor ex_;
  Registry& registry_;
  Options options_;
  RouterMetrics metrics_;
  std::vector<BrokerLane*> lanes_;
  bool draining_ = false;
  std::size_t in_flight_ = 0;
  Event idle_;
  const std::chrono::steady_clock::time_point started_at_ = std::chrono::steady_clock::now();
};

}  // namespace postern::broker
