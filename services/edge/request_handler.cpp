#include "edge/request_handler.hpp"

#include <boost/asio/ssl.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket/rfc6455.hpp>
#include <algorithm>
#include <random>

#include "common/net/request_target.hpp"
#include "common/policy/cors.hpp"
#include "edge/client_stream.hpp"
#include "edge/settings.hpp"
#include "edge/upstream.hpp"
#include "edge/websocket_upgrade.hpp"

namespace postern::edge {

namespace tv1 = tunnel::v1;
namespace websocket = beast::websocket;
using Request = http::request<http::buffer_body>;
using Parser = http::request_parser<http::buffer_body>;

namespace {

std::string new_request_id() {
  static std::mt19937_64 rng{std::random_device{}()};
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(rng()),
                static_cast<unsigned long long>(rng()));
  return buf;
}

// A request id from a client is kept only if it is short and printable.
bool acceptable_request_id(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (unsigned char c : id) {
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}

// Every value of header `name`, joined with ", " (RFC 9110 5.3).
std::string joined_field(const http::request<http::buffer_body>& req, std::string_view name) {
  std::string out;
  for (const auto& f : req) {
    if (!net::iequals(f.name_string(), name)) continue;
    if (!out.empty()) out += ", ";
    out += f.value();
  }
  return out;
}

// What makes a request unsafe to pass on whatever its API: framing that
// two HTTP parsers could read differently (RFC 9112 6.3), a missing,
// repeated or malformed Host (RFC 9112 3.2), a target that is not a plain
// normalised path. Returns the reason ("" when fine) and sets the
// normalised target and the Host.
std::string check_request(const http::request<http::buffer_body>& req, std::string& target,
                                 std::string& host) {
  std::size_t te = 0, cl = 0, hosts = 0;
  std::string te_value;
  for (const auto& f : req) {
    if (f.name() == http::field::transfer_encoding) {
      ++te;
      te_value = std::string(f.value());
    } else if (f.name() == http::field::content_length) {
      ++cl;
    } else if (f.name() == http::field::host) {
      ++hosts;
      host = std::string(f.value());
    }
  }
  if (te > 0) {
    if (req.version() < 11) return "Transfer-Encoding in an HTTP/1.0 request";
    std::string_view v = te_value;
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
    while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
    if (te > 1 || !net::iequals(v, "chunked")) {
      return "Transfer-Encoding '" + (te > 1 ? std::string("(repeated)") : std::string(v)) +
             "': only a single 'chunked' is accepted";
    }
    if (cl > 0) return "both Content-Length and Transfer-Encoding";
  }
  if (hosts > 1) return "more than one Host header";
  if (hosts == 0 && req.version() >= 11) return "no Host header (HTTP/1.1 requires one)";
  if (hosts == 1) {
    if (auto why = host_problem(host)) return *why;
  }
  auto n = net::normalize_target(req.target());
  if (!n.ok()) return n.error;
  target = std::move(n.target);
  return {};
}

// What the head tells at once: who asks, how, and whether a body follows.
void open_request(ClientRequest& r, const Parser& parser, const std::string& peer_ip, bool tls, bool draining) {
  const auto& req = parser.get();
  r.started = Clock::now();
  r.version = req.version();
  r.request_id = std::string(req["X-Request-Id"]);
  if (!acceptable_request_id(r.request_id)) r.request_id = new_request_id();
  r.method = std::string(req.method_string());
  r.tls = tls;
  r.body_expected = parser.chunked() || (parser.content_length() && *parser.content_length() > 0);
  r.keep_alive = req.keep_alive() && !draining;
  r.upgrade = websocket::is_upgrade(req);
  r.who.client_ip = peer_ip;
  std::string state;
  for (auto [it, end] = req.equal_range("tracestate"); it != end; ++it) {
    if (!state.empty()) state += ',';
    state += it->value();
  }
  r.span = tracing::Span::begin("edge", tracing::Kind::server,
                                tracing::incoming(static_cast<int>(req.count("traceparent")), req["traceparent"],
                                                  std::move(state)));
}

// The client as the forwarding headers tell it, the request's snapshot,
// its route and rules, and whether the edge enforces its API's policies.
void route_request(const RequestHandler::Deps& d, ClientRequest& r, Request& req, const std::string& peer_ip) {
  req.target(r.target);  // what was routed is what is sent on, and logged
  r.path = policy::log_path(r.target);
  r.who = client_address(peer_ip, d.trusted_proxies, joined_field(req, "x-forwarded-for"),
                         joined_field(req, "forwarded"), r.tls ? "https" : "http", r.host);
  r.policies.catalog = d.catalog;
  const auto& cat = r.policies.catalog;
  r.route = d.router.route(cat.get(), r.target);
  const policy::CompiledApi* papi = r.route ? r.route->policy_api : nullptr;
  r.threats = papi ? &papi->threats : cat ? &cat->threats() : &policy::kNoThreatRules;
  // DMZ enforcement (scenario 1): identification, authorisation,
  // throttling and mediation here. Green APIs get them at the connector.
  if (papi && !papi->green) r.policies.api = papi;
}

// Threat protection, for every request: URL, headers, the declared body,
// the client's address.
policy::Verdict check_threats(ClientRequest& r, const Parser& parser) {
  const auto& req = parser.get();
  policy::RequestShape shape;
  shape.url_length = req.target().size();
  for (const auto& f : req) {
    ++shape.header_count;
    shape.header_bytes += f.name_string().size() + f.value().size();
  }
  if (!parser.chunked()) shape.content_length = parser.content_length() ? *parser.content_length() : 0;
  shape.client_ip = r.who.client_ip;
  return policy::check_threats(*r.threats, shape, r.policies.decisions);
}

// A request the edge answers itself before anything is sent on.
struct Refusal {
  int status = 0;
  std::string type_error;  // the Proxy-Status error
  std::string body;        // problem+json
  std::string detail;      // the Proxy-Status details
  bool keep_alive = false;
  std::string offer;  // a 426's Upgrade
};

// No snapshot yet, no API, or the wrong kind of request for its API.
std::optional<Refusal> routing_refusal(const ClientRequest& r) {
  // An unread body would be taken for the next request.
  const bool ka = r.keep_alive && !r.body_expected;
  if (!r.route && !r.policies.catalog) {
    // Nothing has come from the green zone yet: the API may well exist.
    return Refusal{503, "destination_unavailable",
                   problem_body("no-config", "No API configuration yet", 503,
                                "no policy snapshot has reached this edge yet (no connector has attached to the "
                                "broker since it started); retry shortly",
                                r.request_id),
                   "no policy snapshot yet", ka, ""};
  }
  if (!r.route) {
    return Refusal{404, "destination_not_found",
                   problem_body("no-api", "No API matches", 404, "no API is registered for path '" + r.path + "'",
                                r.request_id),
                   "no API for path", ka, ""};
  }
  // A WebSocket API takes upgrades only; a REST API (or a DMZ-local one
  // from the edge's own list) none. An API from the default alias is the
  // green zone's to judge.
  const policy::CompiledApi* papi = r.route->policy_api;
  const bool ws_api = papi ? papi->websocket : false;
  const bool knows_type = papi || r.route->kind == Route::Kind::direct;
  if (r.upgrade && r.body_expected) {
    return Refusal{400, "http_request_error",
                   problem_body("bad-request", "Bad Request", 400, "a WebSocket upgrade request carries no body",
                                r.request_id),
                   "upgrade with a body", false, ""};
  }
  if (knows_type && r.upgrade != ws_api) {
    const int status = ws_api ? 426 : 400;
    std::string detail = ws_api ? "API '" + r.api() + "' is a WebSocket API: connect with a WebSocket client"
                                : "API '" + r.api() + "' is a REST API; it takes no WebSocket upgrade";
    std::string body = problem_body(ws_api ? "upgrade-required" : "not-websocket",
                                    ws_api ? "Upgrade Required" : "Bad Request", status, detail, r.request_id);
    return Refusal{status, "http_request_error", std::move(body), std::move(detail), ka && !r.upgrade,
                   ws_api ? "websocket" : ""};
  }
  return std::nullopt;
}

// The head sent on: the client's end-to-end fields, and what the edge says
// of the client itself.
void build_head(ClientRequest& r, const Parser& parser, const Settings& settings) {
  const auto& req = parser.get();
  auto& head = r.head;
  head.set_request_id(r.request_id);
  head.set_alias(r.route->alias);
  head.set_api(r.route->api);
  head.set_method(r.method);
  head.set_target(r.route->target);
  head.set_client_ip(r.who.client_ip);
  head.set_http_version(r.version);
  const auto connection = req[http::field::connection];
  for (const auto& f : req) {
    const auto name = f.name_string();
    if (net::is_hop_by_hop(name) || net::listed_in_connection(connection, name)) continue;
    // Written by the edge itself below (client_address() decided what of
    // the client's own to keep).
    static constexpr std::string_view kOwn[] = {"host",           "expect",           "x-request-id",
                                                "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",
                                                "forwarded",      "x-real-ip",        "traceparent",
                                                "tracestate"};
    if (std::any_of(std::begin(kOwn), std::end(kOwn), [&](std::string_view n) { return net::iequals(name, n); })) {
      continue;
    }
    auto* h = head.add_headers();
    h->set_name(std::string(name));
    h->set_value(std::string(f.value()));
  }
  auto add = [&](std::string name, std::string value) {
    auto* h = head.add_headers();
    h->set_name(std::move(name));
    h->set_value(std::move(value));
  };
  add("X-Forwarded-For", r.who.x_forwarded_for);
  add("X-Forwarded-Proto", r.tls ? "https" : "http");
  if (!r.host.empty()) add("X-Forwarded-Host", r.host);
  add("Forwarded", r.who.forwarded);
  add("X-Request-Id", r.request_id);
  // The trace goes on with this span as the parent (the broker's, then the
  // connector's, replace it in turn).
  add("traceparent", r.span.traceparent());
  if (!r.span.tracestate().empty()) add("tracestate", r.span.tracestate());
  if (parser.chunked()) {
    head.set_content_length(-1);
  } else {
    head.set_content_length(parser.content_length() ? static_cast<std::int64_t>(*parser.content_length()) : 0);
  }
  r.head_timeout = r.route->timeout_ms
                       ? std::chrono::milliseconds(r.route->timeout_ms)
                       : std::chrono::duration_cast<std::chrono::milliseconds>(settings.upstream_timeout);
  head.set_timeout_ms(static_cast<std::uint32_t>(r.head_timeout.count()));
}

}  // namespace

std::vector<std::pair<std::string, std::string>> ClientRequest::answer_headers() const {
  auto all = policies.response_headers;
  all.insert(all.end(), cors.begin(), cors.end());
  return all;
}

const std::string& ClientRequest::api() const {
  static const std::string kNone;
  return route ? route->api : kNone;
}

void RequestHandler::finish(ClientRequest& r, unsigned status, const std::string& api) {
  exchange_done(d_.metrics, d_.enforcement,
                ExchangeSummary{r.started, status, api, r.request_id, r.who.client_ip, r.method, r.path,
                                r.policies.identity.application, false, &r.span},
                r.policies.decisions);
}

template <class Stream>
asio::awaitable<bool> RequestHandler::handle(ClientConnection<Stream>& c) {
  auto& req = c.parser.get();
  ClientRequest r;
  open_request(r, c.parser, c.peer_ip, c.tls, d_.draining);
  // Framing, Host and the target, before anything routes or looks at them.
  if (const std::string bad = check_request(req, r.target, r.host); !bad.empty()) {
    POSTERN_LOG(info, "bad request")
        .kv("request_id", r.request_id)
        .kv("trace_id", r.span.trace_id())
        .kv("client", c.peer_ip)
        .kv("error", bad);
    std::string body = problem_body("bad-request", "Bad Request", 400, bad, r.request_id);
    co_await write_problem(c.stream, r.version, 400, "http_request_error", body, r.request_id, false, bad);
    finish(r, 400, "");
    co_return false;
  }
  route_request(d_, r, req, c.peer_ip);
  // Threat protection first, for every request.
  if (const auto verdict = check_threats(r, c.parser); !verdict.allowed()) {
    const bool keep = co_await refuse(c, r, verdict, r.keep_alive && !r.body_expected);
    co_return keep;
  }
  if (auto no = routing_refusal(r)) {
    co_await write_problem(c.stream, r.version, no->status, no->type_error, no->body, r.request_id, no->keep_alive,
                           no->detail, no->offer);
    finish(r, static_cast<unsigned>(no->status), r.api());
    co_return no->keep_alive;
  }
  // CORS, whatever the enforcement: a preflight is answered here (a
  // browser sends it without credentials), and answers to an allowed origin
  // carry the allowance.
  if (const auto* api = r.route->matched; api && api->def && api->def->policies().has_cors()) {
    const auto& cors = api->def->policies().cors();
    const auto origin = req[http::field::origin];
    if (policy::is_preflight(r.method, origin, req["Access-Control-Request-Method"])) {
      const bool keep = co_await answer_preflight(c, r, cors);
      co_return keep;
    }
    r.cors = policy::response_headers(cors, origin);
  }
  build_head(r, c.parser, d_.settings);
  if (r.policies.api) {
    const policy::Admission admission{r.host, r.who.client_ip, r.upgrade, req[http::field::origin]};
    const auto verdict = co_await d_.enforcement.admit(r.policies, r.head, admission);
    if (!verdict.allowed()) {
      const bool keep = co_await refuse(c, r, verdict, r.keep_alive && !r.body_expected);
      co_return keep;
    }
  }
  if (r.upgrade) {
    // A session that opened goes on in a coroutine of its own, which
    // records the exchange when it ends (0 here).
    const unsigned status = co_await d_.websocket.exchange(c, r);
    if (status != 0) finish(r, status, r.api());
    co_return false;
  }
  const bool keep = co_await exchange(c, r);
  co_return keep;
}

// A request a policy refused: its answer and its log line.
template <class Stream>
asio::awaitable<bool> RequestHandler::refuse(ClientConnection<Stream>& c, ClientRequest& r,
                                             const policy::Verdict& verdict, bool keep_alive) {
  co_await write_rejection(c.stream, r.version, verdict, r.request_id, keep_alive, &r.cors);
  finish(r, verdict.status, r.api());
  co_return keep_alive;
}

// A CORS preflight for an API with a CORS policy: 204 with the allowance,
// or 403 naming what is not allowed. It never reaches the upstream.
template <class Stream>
asio::awaitable<bool> RequestHandler::answer_preflight(ClientConnection<Stream>& c, ClientRequest& r,
                                                       const policy::v1::Cors& cors) {
  auto& req = c.parser.get();
  const bool ka = r.keep_alive && !r.body_expected;
  const auto answer = policy::preflight(cors, req[http::field::origin], req["Access-Control-Request-Method"],
                                        req["Access-Control-Request-Headers"]);
  if (answer.status != 204) {
    std::string body = problem_body("cors-refused", "Cross-origin request not allowed", 403, answer.problem,
                                    r.request_id);
    co_await write_problem(c.stream, r.version, 403, "http_request_denied", body, r.request_id, ka, answer.problem);
    finish(r, 403, r.api());
    co_return ka;
  }
  http::response<http::empty_body> res{http::status::no_content, r.version};
  for (const auto& [name, value] : answer.headers) res.insert(name, value);
  res.set(http::field::date, net::http_date());
  res.set("X-Request-Id", r.request_id);
  res.keep_alive(ka);
  res.prepare_payload();
  auto [ec, n] = co_await http::async_write(c.stream, res, use_nothrow);
  finish(r, 204, r.api());
  co_return !ec && ka;
}

// An HTTP exchange with the route's upstream, the body streamed up and the
// response down under the API's policies.
template <class Stream>
asio::awaitable<bool> RequestHandler::exchange(ClientConnection<Stream>& c, ClientRequest& r) {
  auto& req = c.parser.get();
  // 100-continue is the edge's to answer: the body is read as it streams.
  if (r.body_expected && net::iequals(req[http::field::expect], "100-continue") && r.version >= 11) {
    static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
    auto [ec, n] = co_await asio::async_write(c.stream, asio::buffer(kContinue), use_nothrow);
    if (ec) co_return false;
  }
  ClientBody<Stream> client_body(c.stream, c.buffer, c.parser, d_.settings.idle_timeout, d_.metrics);
  ClientSink<Stream> client_sink(c.stream, r.version, r.keep_alive, req.method() == http::verb::head, r.request_id,
                                 d_.settings.idle_timeout, d_.metrics);
  policy::Policed policed(r.policies, client_body, client_sink, *r.threats,
                          policy::is_json_content_type(req[http::field::content_type]));
  std::optional<ExchangeError> failure;
  const auto upstream_started = Clock::now();
  tracing::Span call;  // a DMZ-local upstream's call
  try {
    if (policed.body.wants_prefetch()) {
      const auto verdict = co_await policed.body.prefetch(r.policies.decisions);
      if (!verdict.allowed()) {
        const bool keep = co_await refuse(c, r, verdict, r.keep_alive && c.parser.is_done());
        co_return keep;
      }
    }
    Upstream& upstream = d_.upstreams.of(*r.route);
    const policy::RewriteRules rules = upstream.rewrite_rules(*r.route);
    policy::RewritingSink rewriting(policed.sink, rules);
    policy::HeaderAddingSink cors(rewriting, r.cors);
    ResponseSink& sink = r.cors.empty() ? static_cast<ResponseSink&>(rewriting) : cors;
    // A DMZ-local upstream is the native service itself: its call is a
    // span of its own, the parent the service sees.
    if (upstream.calls_native()) {
      call = r.span.child(r.method, tracing::Kind::client);
      tracing::write_traceparent(*r.head.mutable_headers(), call.traceparent(), !call.tracestate().empty());
    }
    co_await upstream.invoke(r.head, policed.body, sink, r.head_timeout);
    tracing::end_call(call, policed.sink.status());
  } catch (const ExchangeError& e) {
    failure = e;
    call.fail(e.what());
  }
  call.end();
  auto& decisions = r.policies.decisions;
  if (policed.body.reported_over_limit()) decisions.push_back({"threat_protection", "reported", "body_too_large"});
  if (failure && failure->code() == tv1::ERROR_CODE_PAYLOAD_TOO_LARGE) {
    decisions.push_back({"threat_protection", "rejected", "body_too_large"});
  }
  const policy::ExchangeFacts facts{r.request_id, r.api(), r.who.client_ip,  r.method,
                                    r.target,     r.started, upstream_started, r.span.trace_id()};
  d_.enforcement.record(r.policies, policed, failure, facts);
  if (failure) {
    const bool keep = co_await failed(c, r, *failure, policed.sink);
    co_return keep;
  }
  finish(r, policed.sink.status(), r.route->api);
  // A body the upstream did not read would be taken for the next request.
  co_return client_sink.keep_alive && c.parser.is_done() && !d_.draining;
}

// An exchange that failed: an error response if none has begun, else the
// connection is cut.
template <class Stream>
asio::awaitable<bool> RequestHandler::failed(ClientConnection<Stream>& c, ClientRequest& r,
                                             const ExchangeError& failure, const policy::PolicedSink& sink) {
  const Route& route = *r.route;
  POSTERN_LOG(warn, "exchange failed")
      .kv("request_id", r.request_id)
      .kv("trace_id", r.span.trace_id())
      .kv("api", route.api)
      .kv("alias", route.alias)
      .kv("code", std::string(error_slug(failure.code())))
      .kv("error", failure.what());
  if (failure.code() == tv1::ERROR_CODE_CLIENT_GONE) {
    finish(r, 499, route.api);
    co_return false;
  }
  if (sink.started()) {
    // Too late for an error response: cut the connection so the client
    // sees a truncated response, never a complete-looking one.
    finish(r, sink.status(), route.api);
    co_return false;
  }
  const bool ka = r.keep_alive && c.parser.is_done();
  const auto extra = r.answer_headers();
  const bool written = co_await write_error(c.stream, r.version, failure, r.request_id, ka, route.api, &extra);
  finish(r, static_cast<unsigned>(http_status(failure.code())), route.api);
  co_return written && ka;
}

template asio::awaitable<bool> RequestHandler::handle(ClientConnection<beast::tcp_stream>&);
template asio::awaitable<bool> RequestHandler::handle(ClientConnection<beast::ssl_stream<beast::tcp_stream>>&);

}  // namespace postern::edge
