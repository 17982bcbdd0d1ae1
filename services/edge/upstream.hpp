#pragma once
// Where the edge sends an exchange it routed: through the tunnel (an API
// routed to an apigateway:// alias: a broker, then a connector) or straight
// to a DMZ-local service (http(s):// or ws(s)://). Light header: no Beast,
// no gRPC.
//
// Single-threaded: the edge's executor.

#include <chrono>
#include <map>
#include <memory>
#include <string>

#include "common/exchange.hpp"
#include "common/net/http_client.hpp"
#include "common/net/ws_relay.hpp"
#include "common/policy/response_rewrite.hpp"
#include "edge/router.hpp"

namespace postern::edge {

class RelayClient;

/// The far side's answer to a WebSocket upgrade and, after a 101, the
/// session's messages.
class WsUpstream {
 public:
  virtual ~WsUpstream() = default;
  /// The answer: 101, or a refusal (with body()).
  virtual const tunnel::v1::ResponseHead& head() const = 0;
  virtual const std::string& body() const = 0;
  /// The session's messages; null unless the far side took the upgrade.
  virtual net::WsPort* port() = 0;
  /// Ends the session on the far side's stream (bounded).
  virtual asio::awaitable<void> close() = 0;
};

class Upstream {
 public:
  virtual ~Upstream() = default;
  /// Runs one HTTP exchange. Throws ExchangeError: the far side's code, or
  /// UPSTREAM_TIMEOUT when no response head comes within `head_timeout`.
  virtual asio::awaitable<void> invoke(const tunnel::v1::RequestHead& head, BodySource& body, ResponseSink& sink,
                                       std::chrono::milliseconds head_timeout) = 0;
  /// Sends the upgrade `head` and waits (options.handshake_timeout) for the
  /// far side's answer; messages are bounded by options.max_message_bytes.
  /// Throws ExchangeError when there is no answer.
  virtual asio::awaitable<std::unique_ptr<WsUpstream>> open_websocket(const tunnel::v1::RequestHead& head,
                                                                      const net::WsStreamOptions& options) = 0;
  /// How the answers to `route` are rewritten here (the native service's
  /// own URLs to the public base path); off where the far side does it.
  virtual policy::RewriteRules rewrite_rules(const Route& route) const = 0;
  /// Whether invoke() calls the native service itself (a DMZ-local API),
  /// rather than a hop that traces its own call.
  virtual bool calls_native() const { return false; }
};

/// Through the tunnel: the RelayClient's brokers, with their failover.
class TunnelUpstream final : public Upstream {
 public:
  explicit TunnelUpstream(RelayClient& relay) : relay_(relay) {}
  /// Off: the connector rewrites, it knows the native URL.
  policy::RewriteRules rewrite_rules(const Route&) const override { return {.off = true}; }
  asio::awaitable<void> invoke(const tunnel::v1::RequestHead& head, BodySource& body, ResponseSink& sink,
                               std::chrono::milliseconds head_timeout) override;
  asio::awaitable<std::unique_ptr<WsUpstream>> open_websocket(const tunnel::v1::RequestHead& head,
                                                              const net::WsStreamOptions& options) override;

 private:
  RelayClient& relay_;
};

/// A DMZ-local service at one URL, over the edge's HTTP client and its pool.
class DirectUpstream final : public Upstream {
 public:
  DirectUpstream(net::HttpClient& http, net::Origin origin) : http_(http), origin_(std::move(origin)) {}
  policy::RewriteRules rewrite_rules(const Route& route) const override;
  asio::awaitable<void> invoke(const tunnel::v1::RequestHead& head, BodySource& body, ResponseSink& sink,
                               std::chrono::milliseconds head_timeout) override;
  asio::awaitable<std::unique_ptr<WsUpstream>> open_websocket(const tunnel::v1::RequestHead& head,
                                                              const net::WsStreamOptions& options) override;
  bool calls_native() const override { return true; }

 private:
  net::HttpClient& http_;
  net::Origin origin_;
};

/// The upstream of each route: the tunnel, or the DirectUpstream of the
/// route's URL and CA bundle (made when first used, kept).
class Upstreams {
 public:
  Upstreams(RelayClient& relay, net::HttpClient& http) : tunnel_(relay), http_(http) {}
  /// Throws ExchangeError (UPSTREAM_UNREACHABLE) for a URL that cannot be
  /// used.
  Upstream& of(const Route& route);

 private:
  TunnelUpstream tunnel_;
  net::HttpClient& http_;
  std::map<std::string, DirectUpstream> direct_;  // by URL + CA file + preserve_host
};

}  // namespace postern::edge
