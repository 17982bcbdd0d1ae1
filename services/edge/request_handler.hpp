#pragma once
// One request at the edge, in steps: the checks every request gets (framing,
// Host, the target), routing, threat protection, the head sent on, DMZ
// enforcement (policy::Enforcement), then the exchange with the route's
// upstream, or a WebSocket upgrade; the invocation record and the log line
// at the end.
//
// Single-threaded: the edge's executor.

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "common/observability/tracing.hpp"
#include "common/policy/enforcement.hpp"
#include "edge/forwarding.hpp"
#include "edge/router.hpp"
#include "postern/tunnel/v1/tunnel.pb.h"

namespace postern::edge {

struct Metrics;
struct Settings;
class Upstreams;
class WebSocketUpgrade;
template <class Stream>
struct ClientConnection;

/// One request as the steps of the request handler (and a WebSocket
/// upgrade) see it, filled in as they go.
struct ClientRequest {
  std::chrono::steady_clock::time_point started;
  std::string request_id;  ///< the client's X-Request-Id if acceptable, else a new one
  std::string method;
  unsigned version = 11;
  bool tls = false;
  bool keep_alive = false;  ///< the client's wish, unless the edge drains
  bool body_expected = false;
  bool upgrade = false;  ///< a WebSocket upgrade
  std::string target;    ///< normalised: what is routed, sent on and logged
  std::string host;      ///< the Host header ("" if none)
  std::string path;      ///< for logs: no query, no path-parameter values
  ClientAddress who;     ///< the peer alone until the forwarding headers are read
  std::optional<Route> route;
  /// The API's threat rules, or the global ones when no API matches.
  const policy::ThreatRules* threats = &policy::kNoThreatRules;
  /// catalog: this request's snapshot, whatever arrives meanwhile; api: set
  /// when the edge enforces the API's policies (DMZ enforcement).
  policy::ExchangePolicies policies;
  tunnel::v1::RequestHead head;  ///< what goes on to the upstream
  std::chrono::milliseconds head_timeout{0};
  /// The API's CORS allowance for this request's Origin (added to every
  /// answer), or none.
  std::vector<std::pair<std::string, std::string>> cors;
  /// The edge's span: a child of the client's traceparent, or a new trace.
  tracing::Span span;

  /// The route's API, "" without a route.
  const std::string& api() const;
  /// What every answer the edge writes itself carries besides its own
  /// fields: the API's RateLimit-* (admission's) and CORS allowance.
  std::vector<std::pair<std::string, std::string>> answer_headers() const;
};

class RequestHandler {
 public:
  struct Deps {
    const Settings& settings;
    Metrics& metrics;
    const Router& router;
    /// The snapshot in force (may be null).
    const std::shared_ptr<const policy::Catalog>& catalog;
    /// Peers whose X-Forwarded-For and Forwarded are believed.
    const policy::IpRanges& trusted_proxies;
    policy::Enforcement& enforcement;
    Upstreams& upstreams;
    WebSocketUpgrade& websocket;
    const bool& draining;
  };

  explicit RequestHandler(Deps deps) : d_(std::move(deps)) {}

  /// Serves the request whose head `c.parser` holds. Returns whether the
  /// connection may carry another request.
  template <class Stream>
  asio::awaitable<bool> handle(ClientConnection<Stream>& c);

  /// The end of an exchange: request metrics, policy decisions, the log line.
  void finish(ClientRequest& r, unsigned status, const std::string& api);

 private:
  template <class Stream>
  asio::awaitable<bool> refuse(ClientConnection<Stream>& c, ClientRequest& r, const policy::Verdict& verdict,
                               bool keep_alive);
  template <class Stream>
  asio::awaitable<bool> exchange(ClientConnection<Stream>& c, ClientRequest& r);
  template <class Stream>
  asio::awaitable<bool> answer_preflight(ClientConnection<Stream>& c, ClientRequest& r, const policy::v1::Cors& cors);
  template <class Stream>
  asio::awaitable<bool> failed(ClientConnection<Stream>& c, ClientRequest& r, const ExchangeError& failure,
                               const policy::PolicedSink& sink);

  Deps d_;
};

}  // namespace postern::edge
