#pragma once
// The edge's side of the tunnel: lanes (Relay.Lane, tunnel.proto) to every
// broker address, each carrying any number of exchanges, request frames up
// and response frames down. Several brokers (every address their names
// resolve to, one channel each: BrokerSet) share the exchanges round-robin;
// an exchange a broker could not take goes to the next one.

#include <chrono>
#include <functional>
#include <memory>

#include "common/exchange.hpp"
#include "common/net/ws_relay.hpp"
#include "edge/upstream.hpp"
#include "postern/config/v1/config.pb.h"
#include "postern/policy/v1/policy.pb.h"

namespace prometheus {
class Registry;
}

namespace postern::edge {

/// A WebSocket session's stream to the broker, once the far side answered
/// the upgrade.
class WsTunnel final : public WsUpstream {
 public:
  struct Impl;
  explicit WsTunnel(std::unique_ptr<Impl> impl);
  ~WsTunnel() override;
  /// The native service's answer: 101, or its refusal (with body()).
  const tunnel::v1::ResponseHead& head() const override;
  const std::string& body() const override;
  /// The session's messages (after a 101; null otherwise).
  net::WsPort* port() override;
  /// Ends the stream: reads what is left (bounded), then Finish.
  asio::awaitable<void> close() override;

 private:
  friend class RelayClient;
  std::unique_ptr<Impl> impl_;
};

class RelayClient {
 public:
  /// Validates cfg (throws std::runtime_error naming the field: no broker,
  /// not host:port, bad TLS material), starts the completion-queue pump and
  /// the resolution of every broker name (`address`, `addresses`), again
  /// every resolve_interval. `metrics` (may be null) gets the failover
  /// counters. Use on `ex` only.
  /// TLS files are read again every `file_check_interval`.
  RelayClient(asio::any_io_executor ex, const config::v1::RelayClient& cfg, prometheus::Registry* metrics = nullptr,
              std::chrono::seconds file_check_interval = std::chrono::seconds(10));
  ~RelayClient();

  /// Runs one exchange through a broker. Throws ExchangeError with the
  /// code the far side reported, or UPSTREAM_TIMEOUT when no response head
  /// arrives within `head_timeout` (over every broker tried).
  ///
  /// Failover: when the broker answers that it is draining or has no
  /// connector for the alias (it refused before handing the exchange on),
  /// or cannot be reached before anything came back (for a request that
  /// was already sent: only for an idempotent method), the exchange goes to
  /// the next broker, each at most once; never once a body chunk has been
  /// read from `body` or a response frame has reached `sink`. The last
  /// broker's error is the one thrown.
  asio::awaitable<void> invoke(const tunnel::v1::RequestHead& head, BodySource& body, ResponseSink& sink,
                               std::chrono::milliseconds head_timeout);

  /// Opens a WebSocket session through a broker: sends the upgrade head
  /// and waits (at most `head_timeout`) for the far side's answer. Throws
  /// ExchangeError, and fails over, like invoke().
  asio::awaitable<std::unique_ptr<WsTunnel>> open_websocket(const tunnel::v1::RequestHead& head,
                                                            std::chrono::milliseconds head_timeout,
                                                            std::size_t max_message_bytes);

  /// Follows one broker's WatchConfig stream until stop_watch(); when it
  /// ends, reconnects to the next healthy broker. `known()` is the version
  /// held; `on_snapshot` gets each snapshot, including a broker's "version
  /// 0: none yet".
  asio::awaitable<void> watch_config(std::string client_id, std::function<std::uint64_t()> known,
                                     std::function<void(policy::v1::SignedSnapshot&&)> on_snapshot);
  /// Ends the current WatchConfig stream; the next asks with the version
  /// known() gives then (0 after a dropped snapshot: send me yours).
  void restart_watch();
  void stop_watch();

  /// One broker address as the status page shows it.
  struct BrokerState {
    std::string name, target;
    std::size_t lanes_up = 0, lanes = 0, exchanges = 0;
    bool draining = false, down = false, watching = false;
  };
  std::vector<BrokerState> brokers() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;  // shared with the resolver loop
};

}  // namespace postern::edge
