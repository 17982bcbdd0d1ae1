#include "edge/websocket_upgrade.hpp"

#include "common/net/beast_ws_port.hpp"
#include "common/policy/ws_policies.hpp"
#include "edge/client_stream.hpp"
#include "edge/in_flight.hpp"
#include "edge/settings.hpp"
#include "edge/upstream.hpp"

namespace postern::edge {

namespace tv1 = tunnel::v1;
namespace websocket = beast::websocket;

// What a session keeps of its upgrade request: its policies (the snapshot
// they point into, its concurrency slots, the decisions so far), who and
// what it is, and when the exchange started (for the request log line).
struct WebSocketUpgrade::Session {
  policy::ExchangePolicies policies;
  policy::WsSessionInfo info;
  std::string method;
  Clock::time_point started;
  tracing::Span span;  // the edge's, for the session's whole length
};

template <class Stream>
asio::awaitable<unsigned> WebSocketUpgrade::exchange(ClientConnection<Stream>& c, ClientRequest& r) {
  r.head.set_websocket(true);
  r.head.set_content_length(0);
  const policy::ThreatRules& threats = *r.threats;
  net::WsStreamOptions client_options;
  client_options.max_message_bytes = threats.ws_message_bytes.max > 0 && !threats.ws_message_bytes.report_only
                                         ? threats.ws_message_bytes.max
                                         : d_.settings.max_ws_message_bytes;
  client_options.ping_interval = policy::WsSessionPolicies::ping_interval(r.policies.policies());
  net::WsStreamOptions far_options;
  far_options.max_message_bytes = d_.settings.max_ws_message_bytes;
  far_options.ping_interval = client_options.ping_interval;
  far_options.handshake_timeout = r.head_timeout;
  std::unique_ptr<WsUpstream> far;
  std::optional<ExchangeError> failure;
  try {
    Upstream& upstream = d_.upstreams.of(*r.route);
    far = co_await upstream.open_websocket(r.head, far_options);
  } catch (const ExchangeError& e) {
    failure = e;
  }
  if (failure) {
    POSTERN_LOG(warn, "websocket upgrade failed")
        .kv("request_id", r.request_id)
        .kv("trace_id", r.span.trace_id())
        .kv("api", r.api())
        .kv("code", std::string(error_slug(failure->code())))
        .kv("error", failure->what());
    const auto extra = r.answer_headers();
    co_await write_error(c.stream, r.version, *failure, r.request_id, false, r.route->api, &extra);
    co_return static_cast<unsigned>(http_status(failure->code()));
  }
  if (far->head().status() != 101 || !far->port()) {
    const unsigned status = co_await refused(c, r, *far);
    co_return status;
  }
  const unsigned status = co_await accept(c, r, far, client_options);
  co_return status;
}

// The far side's refusal, written as any response is.
template <class Stream>
asio::awaitable<unsigned> WebSocketUpgrade::refused(ClientConnection<Stream>& c, const ClientRequest& r,
                                                    const WsUpstream& far) {
  tv1::ResponseHead answer = far.head();
  const unsigned status = answer.status();
  answer.set_content_length(static_cast<std::int64_t>(far.body().size()));
  for (auto& [name, value] : r.answer_headers()) {
    auto* h = answer.add_headers();
    h->set_name(std::move(name));
    h->set_value(std::move(value));
  }
  ClientSink<Stream> sink(c.stream, r.version, false, false, r.request_id, d_.settings.idle_timeout, d_.metrics);
  try {
    co_await sink.head(answer);
    co_await sink.body(far.body());
    const Trailers none;
    co_await sink.end(none);
  } catch (const ExchangeError&) {
    // The client went away: nothing more is owed.
  }
  co_return status;
}

// The far side took the upgrade: the client's handshake, then the session
// in a coroutine of its own.
template <class Stream>
asio::awaitable<unsigned> WebSocketUpgrade::accept(ClientConnection<Stream>& c, ClientRequest& r,
                                                   std::unique_ptr<WsUpstream>& far,
                                                   const net::WsStreamOptions& client_options) {
  const std::string subprotocol(policy::header_value(far->head().headers(), "sec-websocket-protocol"));
  websocket::stream<Stream> ws(std::move(c.stream));
  c.upgraded = true;
  net::configure_ws(ws, client_options);
  ws.set_option(websocket::stream_base::decorator(
      [subprotocol, request_id = r.request_id, extra = r.policies.response_headers](websocket::response_type& res) {
        for (const auto& [name, value] : extra) res.set(name, value);
        if (!subprotocol.empty()) res.set(http::field::sec_websocket_protocol, subprotocol);
        res.set("X-Request-Id", request_id);
        res.set(http::field::server, "postern-edge");
        res.set(http::field::date, net::http_date());
      }));
  auto [aec] = co_await ws.async_accept(c.parser.get(), use_nothrow);
  if (aec) {
    POSTERN_LOG(info, "websocket client handshake failed")
        .kv("request_id", r.request_id)
        .kv("trace_id", r.span.trace_id())
        .kv("error", aec.message());
    const auto bye = net::WsMessage::close(1001, "client handshake failed");
    co_await far->port()->write(bye);
    co_await far->close();
    co_return 400;
  }
  // The session runs on in a coroutine of its own, so that the HTTP
  // connection's coroutines (request parser, exchange state: about 10 KiB)
  // end now rather than stay suspended under it for its whole life.
  policy::WsSessionInfo info{r.request_id, r.api(),    r.policies.identity.application, r.who.client_ip,
                             r.path,       subprotocol, "edge",                          r.span.trace_id()};
  Session s{std::move(r.policies), std::move(info), r.method, r.started, std::move(r.span)};
  d_.in_flight.begin();  // until the session ends: a drain waits for it
  asio::co_spawn(d_.ex, session(std::move(ws), std::move(far), std::move(s)), [this](std::exception_ptr e) {
    log_session_failure(e);
    d_.in_flight.end();
  });
  co_return 0;
}

// An open session, relayed until either side closes; then the exchange is
// recorded as any other (status 101).
template <class WsStream>
asio::awaitable<void> WebSocketUpgrade::session(WsStream ws, std::unique_ptr<WsUpstream> far, Session s) {
  net::BeastWsPort<typename WsStream::next_layer_type> client(std::move(ws));
  net::WsPort& server = *far->port();
  const policy::v1::Policies* pol = s.policies.policies();
  policy::WsSessionPolicies hooks(pol, std::move(s.info), d_.enforcement.invocations(), &d_.transforms);
  const policy::WsSessionInfo& info = hooks.info();
  const std::string& api = info.api;
  auto& bytes = d_.metrics.ws_bytes;
  net::WsRelay relay(d_.ex, client, server, &hooks,
                     policy::WsSessionPolicies::relay_options(
                         pol, bytes.Add({{"api", api}, {"direction", "client_to_server"}}),
                         bytes.Add({{"api", api}, {"direction", "server_to_client"}})));
  hooks.opened();
  POSTERN_LOG(info, "websocket open")
      .kv("request_id", info.request_id)
      .kv("trace_id", info.trace_id)
      .kv("api", api)
      .kv("subprotocol", info.subprotocol);
  d_.metrics.ws_sessions.Increment();
  co_await d_.sessions.run(relay);
  d_.metrics.ws_sessions.Decrement();
  const auto& st = relay.stats();
  d_.metrics.ws_messages.Add({{"api", api}, {"direction", "client_to_server"}})
      .Increment(static_cast<double>(st.messages[0]));
  d_.metrics.ws_messages.Add({{"api", api}, {"direction", "server_to_client"}})
      .Increment(static_cast<double>(st.messages[1]));
  // What the client was sent: the far side's close passed on, or ours.
  const std::uint16_t client_got = st.closed_by == "gateway" ? st.gateway_close_code
                                   : st.closed_by == "server" ? net::forwardable_close_code(st.server_close_code)
                                                              : st.client_close_code;
  d_.metrics.ws_sessions_total.Add({{"api", api}, {"close_code", std::to_string(client_got)}}).Increment();
  co_await far->close();
  hooks.closed(st, s.policies.decisions);
  POSTERN_LOG(info, "websocket closed")
      .kv("request_id", info.request_id)
      .kv("trace_id", info.trace_id)
      .kv("api", api)
      .kv("closed_by", st.closed_by)
      .kv("client_close", static_cast<unsigned>(st.client_close_code))
      .kv("server_close", static_cast<unsigned>(st.server_close_code))
      .kv("messages_in", st.messages[0])
      .kv("messages_out", st.messages[1]);
  exchange_done(d_.metrics, d_.enforcement,
                ExchangeSummary{s.started, 101, api, info.request_id, info.client_ip, s.method, info.path,
                                info.application, /*websocket_session=*/true, &s.span},
                s.policies.decisions);
}

template asio::awaitable<unsigned> WebSocketUpgrade::exchange(ClientConnection<beast::tcp_stream>&, ClientRequest&);
template asio::awaitable<unsigned> WebSocketUpgrade::exchange(
    ClientConnection<beast::ssl_stream<beast::tcp_stream>>&, ClientRequest&);

}  // namespace postern::edge
