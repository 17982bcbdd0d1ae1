#pragma once
// The edge's side of Relay.Invoke: one gRPC stream per exchange to the
// broker, request frames up, response frames down.

#include <chrono>
#include <functional>
#include <memory>

#include "common/exchange.hpp"
#include "common/net/ws_relay.hpp"
#include "postern/config/v1/config.pb.h"
#include "postern/policy/v1/policy.pb.h"

namespace postern::edge {

/// A WebSocket session's stream to the broker, once the far side answered
/// the upgrade.
class WsTunnel {
 public:
  struct Impl;
  explicit WsTunnel(std::unique_ptr<Impl> impl);
  ~WsTunnel();
  /// The native service's answer: 101, or its refusal (with body()).
  const tunnel::v1::ResponseHead& head() const;
  const std::string& body() const;
  /// The session's messages (valid after a 101).
  net::WsPort& port();
  /// Ends the stream: reads what is left (bounded), then Finish.
  asio::awaitable<void> close();

 private:
  friend class RelayClient;
  std::unique_ptr<Impl> impl_;
};

class RelayClient {
 public:
  /// Creates the channel (TLS if configured) and its completion-queue pump.
  /// Throws std::runtime_error naming the field on bad TLS material.
  RelayClient(asio::any_io_executor ex, const config::v1::RelayClient& cfg);
  ~RelayClient();

  /// Runs one exchange through the broker. Throws ExchangeError with the
  /// code the far side reported, or UPSTREAM_TIMEOUT when no response head
  /// arrives within `head_timeout`.
  asio::awaitable<void> invoke(const tunnel::v1::RequestHead& head, BodySource& body, ResponseSink& sink,
                               std::chrono::milliseconds head_timeout);

  /// Opens a WebSocket session through the broker: sends the upgrade head
  /// and waits (at most `head_timeout`) for the far side's answer. Throws
  /// ExchangeError like invoke().
  asio::awaitable<std::unique_ptr<WsTunnel>> open_websocket(const tunnel::v1::RequestHead& head,
                                                            std::chrono::milliseconds head_timeout,
                                                            std::size_t max_message_bytes);

  /// Follows the broker's WatchConfig stream (reconnecting) until
  /// stop_watch(). `known()` is the version held; `on_snapshot` gets each
  /// snapshot, including the broker's "version 0: none yet".
  asio::awaitable<void> watch_config(std::string client_id, std::function<std::uint64_t()> known,
                                     std::function<void(policy::v1::Snapshot&&)> on_snapshot);
  void stop_watch();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace postern::edge
