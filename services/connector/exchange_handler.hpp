#pragma once
// What a connector does with an exchange a broker opened on one of its
// lanes: checks the head (nothing from the DMZ is taken on trust), finds
// the API in its own catalog, applies the green-zone policies when they are
// its to apply, calls the native service (HTTP, or a WebSocket session that
// then runs in a coroutine of its own), and counts and logs the exchange.
//
// Single-threaded: the connector's executor.

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "common/event.hpp"
#include "common/net/http_client.hpp"
#include "common/net/ws_relay.hpp"
#include "common/observability/tracing.hpp"
#include "common/policy/catalog.hpp"
#include "common/policy/enforcement.hpp"
#include "common/policy/ws_policies.hpp"
#include "common/tunnel/endpoint.hpp"
#include "connector/metrics.hpp"

namespace postern::connector {

class ExchangeHandler {
 public:
  struct Deps {
    std::string connector_id;
    const std::map<std::string, net::Origin>& origins;  // by alias
    const std::shared_ptr<const policy::Catalog>& catalog;  // the one in force (may be null)
    net::HttpClient& http;
    policy::Enforcement& enforcement;
    policy::MessageTransformer& transforms;
    Metrics& metrics;
    std::size_t max_ws_message_bytes;
    /// Exchanges in flight at most, over every broker and lane
    /// (max_concurrency); beyond, refused with NO_CAPACITY.
    std::size_t max_exchanges = 10000;
  };

  ExchangeHandler(asio::any_io_executor ex, Deps deps);

  /// Serves an exchange the far side opened, in a coroutine of its own.
  void serve(std::shared_ptr<tunnel::Exchange> x, tunnel::v1::RequestHead&& head);

  std::size_t in_flight() const { return in_flight_; }
  /// Set whenever nothing is in flight.
  Event& idle() { return idle_; }
  /// Closes every WebSocket session with `code` (a drain).
  void close_sessions(std::uint16_t code, const std::string& reason) { ws_sessions_.stop_all(code, reason); }

 private:
  asio::awaitable<void> run(std::shared_ptr<tunnel::Exchange> x, tunnel::v1::RequestHead head);
  asio::awaitable<void> relay_websocket(std::shared_ptr<tunnel::Exchange> x, std::unique_ptr<net::WsPort> native,
                                        std::shared_ptr<const policy::Catalog> cat, const policy::v1::Policies* pol,
                                        policy::WsSessionInfo info, policy::Decisions decisions,
                                        policy::Limiter::Hold hold, std::string alias,
                                        std::chrono::steady_clock::time_point started, tracing::Span span);
  void count(const std::string& alias, const std::string& code, std::chrono::steady_clock::time_point started);
  void begin();
  void done();

  asio::any_io_executor ex_;
  Deps d_;
  net::WsSessions ws_sessions_;
  std::size_t in_flight_ = 0;
  Event idle_;
};

}  // namespace postern::connector
