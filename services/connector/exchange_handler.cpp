#include "connector/exchange_handler.hpp"

#include <algorithm>
#include <optional>

#include "common/net/http_headers.hpp"
#include "common/net/request_target.hpp"
#include "common/observability/log.hpp"
#include "common/policy/response_rewrite.hpp"
#include "common/tunnel/exchange_io.hpp"

namespace postern::connector {

namespace tv1 = tunnel::v1;
namespace pv1 = policy::v1;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

// The `code` label: the native service's status, or what failed
// (snake_case: upstream_unreachable, upstream_timeout, ...).
std::string code_label(unsigned status, const std::optional<ExchangeError>& failure) {
  if (!failure) return std::to_string(status);
  return error_label(failure->code());
}

// What makes a request head from the tunnel unfit to write to a native
// service: a method or header name that is no token, a value with CR, LF or
// NUL (request splitting), a target that is not the normalised path the edge
// routes. "" when it is fine.
std::string head_problem(const tv1::RequestHead& head) {
  if (!net::is_token(head.method())) return "a method that is not a token";
  for (unsigned char c : head.target()) {
    if (c <= 0x20 || c == 0x7f) return "a request target with a space or a control character";
  }
  if (!net::is_normalized_target(head.target())) return "a request target that is not a normalised path";
  for (const auto& h : head.headers()) {
    if (!net::is_token(h.name())) return "a header name that is not a token";
    if (!net::is_safe_field_value(h.value())) return "header '" + h.name() + "' has CR, LF or NUL in its value";
  }
  return {};
}

// The API `head` belongs to in this connector's own catalog: for a request
// the edge routed to its default alias (it names no API), the API whose
// base path matches (the target becomes its native path); then, always, the
// API on the alias whose native prefix holds the target (the longest: the
// most specific; among equally specific ones, allow_overlap, the one the
// edge named). Null: no API (the request passes by alias only).
// The origin that sends the client's Host (the edge's X-Forwarded-Host):
// an API's preserve_host.
net::Origin with_client_host(const net::Origin& o) {
  net::Origin copy = o;
  copy.preserve_host = true;
  return copy;
}

const policy::CompiledApi* own_api(const policy::Catalog* cat, tv1::RequestHead& head) {
  if (!cat) return nullptr;
  if (head.api().empty()) {
    if (auto m = cat->route(head.target()); m && m->api->reverse_invoke) {
      head.set_alias(m->api->alias);
      head.set_target(m->target);
    }
  }
  const std::string_view path = std::string_view(head.target()).substr(0, head.target().find('?'));
  const policy::CompiledApi* best = nullptr;
  for (const auto& a : cat->apis()) {
    if (!a.reverse_invoke || a.alias != head.alias()) continue;
    const bool holds = a.prefix.empty() || (path.starts_with(a.prefix) &&
                                            (path.size() == a.prefix.size() || path[a.prefix.size()] == '/'));
    if (!holds) continue;
    const bool longer = !best || a.prefix.size() > best->prefix.size();
    const bool tie_named = best && a.prefix.size() == best->prefix.size() && a.name == head.api();
    if (longer || tie_named) best = &a;
  }
  if (best) head.set_api(best->name);
  return best;
}

}  // namespace

ExchangeHandler::ExchangeHandler(asio::any_io_executor ex, Deps deps) : ex_(ex), d_(std::move(deps)), idle_(ex) {
  idle_.set();
}

void ExchangeHandler::begin() {
  if (in_flight_++ == 0) idle_.reset();
  d_.metrics.in_flight.Set(static_cast<double>(in_flight_));
}

void ExchangeHandler::done() {
  if (--in_flight_ == 0) idle_.set();
  d_.metrics.in_flight.Set(static_cast<double>(in_flight_));
}

void ExchangeHandler::serve(std::shared_ptr<tunnel::Exchange> x, tv1::RequestHead&& head) {
  if (in_flight_ >= d_.max_exchanges) {
    d_.metrics.requests_by.get({head.alias(), "no-capacity"}).Increment();
    x->abandon(tv1::ERROR_CODE_NO_CAPACITY, "connector '" + d_.connector_id + "' runs " +
                                                std::to_string(d_.max_exchanges) +
                                                " exchanges already (max_concurrency)");
    return;
  }
  begin();
  asio::co_spawn(ex_, run(std::move(x), std::move(head)), [this](std::exception_ptr e) {
    if (e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        POSTERN_LOG(error, "exchange failed").kv("error", ex.what());
      }
    }
    done();
  });
}

void ExchangeHandler::count(const std::string& alias, const std::string& code, Clock::time_point started) {
  d_.metrics.requests_by.get({alias, code}).Increment();
  d_.metrics.duration_by.get({alias}, kLatencyBuckets)
      .Observe(std::chrono::duration<double>(Clock::now() - started).count());
}

// Everything between a request head and its answer: the checks, green-zone
// policies, the native service (HTTP, or the WebSocket upgrade), metrics and
// the invocation record.
asio::awaitable<void> ExchangeHandler::run(std::shared_ptr<tunnel::Exchange> x, tv1::RequestHead head) {
  const auto started = Clock::now();
  // The API the edge named (own_api() may name another in `head`).
  const std::string edge_api = head.api();
  // The connector's span, a child of the broker's; its call to the native
  // service is a span of its own, the parent the service sees.
  const auto trace_in = tracing::read_headers(head.headers());
  tracing::Span span = tracing::Span::begin("connector", tracing::Kind::server, trace_in);
  tracing::Span call;
  policy::ExchangePolicies policies;
  policies.catalog = d_.catalog;  // this exchange's snapshot, whatever arrives meanwhile
  const auto& cat = policies.catalog;
  const std::string bad = head_problem(head);
  const policy::CompiledApi* api = bad.empty() ? own_api(cat.get(), head) : nullptr;
  // Policies the edge says it enforced are skipped only for exactly that
  // API, and only if it is one the DMZ enforces; anything else (a green
  // API, an API the edge did not name, as with its default alias) is
  // enforced here.
  const bool enforce = api && (api->green || api->name != edge_api);
  if (enforce) policies.api = api;
  const pv1::Policies* pol = policies.policies();
  tunnel::ExchangeBody body(*x);
  tunnel::ExchangeSink sink(*x, &d_.metrics.bytes_out);
  // Threat protection is the edge's.
  policy::Policed policed(policies, body, sink, policy::kNoThreatRules, false);
  std::optional<ExchangeError> failure;
  unsigned status = 0;
  bool websocket_ran = false;
  try {
    if (!bad.empty()) throw ExchangeError(tv1::ERROR_CODE_BAD_REQUEST, "refused at the connector: " + bad);
    if (enforce) {
      const std::string host(policy::header_value(head.headers(), "x-forwarded-host"));
      const policy::Admission admission{host, head.client_ip(), head.websocket(), std::nullopt};
      const auto verdict = co_await d_.enforcement.admit(policies, head, admission);
      if (!verdict.allowed()) {
        std::string problem;
        auto rh = policy::rejection(verdict, head.request_id(), problem);
        status = rh.status();
        co_await policed.sink.head(rh);
        co_await policed.sink.body(problem);
        const Trailers none;
        co_await policed.sink.end(none);
      }
    }
    if (!policed.sink.started()) {
      const auto it = d_.origins.find(head.alias());
      if (it == d_.origins.end()) {
        // The client reads this: the API, not the alias or connector (the
        // log names both).
        POSTERN_LOG(warn, "no native service for alias")
            .kv("request_id", head.request_id())
            .kv("trace_id", span.trace_id())
            .kv("alias", head.alias())
            .kv("connector", d_.connector_id);
        throw ExchangeError(tv1::ERROR_CODE_UNKNOWN_ALIAS,
                            "no native service for " + (head.api().empty() ? std::string("this route")
                                                                            : "API '" + head.api() + "'"));
      }
      // The API's view of the native service: its Host (preserve_host), and
      // how the response's own URLs are rewritten to the public base path.
      std::optional<net::Origin> client_host;
      if (api && api->def && api->def->preserve_host()) client_host = with_client_host(it->second);
      const net::Origin& origin = client_host ? *client_host : it->second;
      policy::RewriteRules rules;
      if (api) rules = policy::RewriteRules::of(*api, origin.tls, origin.host, origin.port, origin.base_path, api->prefix);
      else rules.off = true;
      std::chrono::milliseconds head_timeout = it->second.read_timeout;
      if (head.timeout_ms() > 0) head_timeout = std::min(head_timeout, std::chrono::milliseconds(head.timeout_ms()));
      call = span.child(head.method(), tracing::Kind::client);
      tracing::write_traceparent(*head.mutable_headers(), call.traceparent(), !trace_in.tracestate.empty());
      if (call.recording()) {
        call.attr("server.address", origin.host).attr("url.path", policy::log_path(head.target()));
        if (!origin.port.empty()) call.attr("server.port", std::stoi(origin.port));
      }
      policed.sink.stamp_native(Clock::now(), policies.identity.application);
      if (head.websocket()) {
        net::WsStreamOptions o;
        o.max_message_bytes = d_.max_ws_message_bytes;
        o.ping_interval = policy::WsSessionPolicies::ping_interval(pol);
        o.handshake_timeout = head_timeout;
        auto up = co_await d_.http.websocket(origin, head, o);
        status = up.head.status();
        tracing::end_call(call, status);
        policy::rewrite_response_head(rules, up.head);
        const std::string subprotocol(policy::header_value(up.head.headers(), "sec-websocket-protocol"));
        co_await sink.head(up.head);
        if (!up.port) {
          // The native service's refusal, passed on (at most what the edge keeps of it).
          if (up.body.size() > kMaxRefusalBodyBytes) up.body.resize(kMaxRefusalBodyBytes);
          if (!up.body.empty()) co_await sink.body(up.body);
          const Trailers none;
          co_await sink.end(none);
        } else {
          // The session runs on in a coroutine of its own, so that this
          // exchange's state (policies, the upgrade: a few KiB) goes now
          // rather than stay suspended for the session's whole life.
          websocket_ran = true;
          policy::WsSessionInfo info{head.request_id(), head.api(),  policies.identity.application, head.client_ip(),
                                     policy::log_path(head.target()), subprotocol, "connector", span.trace_id()};
          begin();  // the session counts in flight until it ends
          asio::co_spawn(ex_,
                         relay_websocket(x, std::move(up.port), cat, pol, std::move(info),
                                         policy::Decisions(policies.decisions), std::move(policies.hold),
                                         head.alias(), started, std::move(span)),
                         [this](std::exception_ptr e) {
                           if (e) POSTERN_LOG(error, "websocket session failed");
                           done();
                         });
        }
      } else {
        policy::RewritingSink rewriting(policed.sink, rules);
        co_await d_.http.exchange(origin, head, policed.body, rewriting, head_timeout);
        status = policed.sink.status();
        tracing::end_call(call, status);
      }
    }
  } catch (const ExchangeError& e) {
    failure = e;
  } catch (const std::exception& e) {
    failure = ExchangeError(tv1::ERROR_CODE_INTERNAL, e.what());
  }
  if (failure) {
    status = 0;
    call.fail(failure->what()).end();
    if (failure->code() != tv1::ERROR_CODE_CLIENT_GONE) {
      POSTERN_LOG(warn, "exchange failed")
          .kv("request_id", head.request_id())
          .kv("trace_id", span.trace_id())
          .kv("alias", head.alias())
          .kv("code", std::string(error_slug(failure->code())))
          .kv("error", failure->what());
      x->abandon(failure->code(), failure->what());
    }
  } else if (!websocket_ran) {
    // What is left of the request (normally its end) is read, so the far
    // side is not left waiting for credit; bounded.
    co_await body.drain(5s);
  }
  const std::string alias = head.alias();
  // A WebSocket session counts when it ends (relay_websocket).
  if (!websocket_ran) {
    const std::string code = code_label(status, failure);
    count(alias, code, started);
    log::ExchangeRecord rec;
    rec.request_id = head.request_id();
    rec.client = head.client_ip();
    rec.method = head.method();
    const std::string path = policy::log_path(head.target());
    rec.path = path;
    rec.api = api ? std::string_view(api->name) : std::string_view(head.api());
    rec.application = policies.identity.application;
    rec.alias = alias;
    rec.status = failure ? 0 : status;
    if (failure) rec.result = code;
    rec.duration_ms = std::chrono::duration<double, std::milli>(Clock::now() - started).count();
    tracing::end_exchange(span, rec);
    log::log_exchange(rec);
    d_.metrics.bytes_in.Increment(static_cast<double>(policed.body.bytes()));
  }
  if (enforce) d_.enforcement.count(api->name, policies.decisions);
  if (!websocket_ran) {
    const std::string_view api_name = enforce ? std::string_view(api->name) : std::string_view();
    const policy::ExchangeFacts facts{head.request_id(), api_name,     head.client_ip(), head.method(),
                                      head.target(),     started,      std::nullopt,     span.trace_id()};
    d_.enforcement.record(policies, policed, failure, facts);
  }
}

// Relays a session between the tunnel and the native service until both
// have closed; per-message policies, metrics and the invocation record.
asio::awaitable<void> ExchangeHandler::relay_websocket(std::shared_ptr<tunnel::Exchange> x,
                                                       std::unique_ptr<net::WsPort> native,
                                                       std::shared_ptr<const policy::Catalog> cat,
                                                       const pv1::Policies* pol, policy::WsSessionInfo info,
                                                       policy::Decisions decisions, policy::Limiter::Hold hold,
                                                       std::string alias, Clock::time_point started,
                                                       tracing::Span span) {
  tunnel::ExchangeWsPort tunnel_side(std::move(x), d_.max_ws_message_bytes);
  policy::WsSessionPolicies hooks(pol, std::move(info), d_.enforcement.invocations(), &d_.transforms);
  const policy::WsSessionInfo& logged = hooks.info();  // for the session's log record
  auto& bytes = d_.metrics.ws_bytes;
  std::exception_ptr failed;
  try {
    net::WsRelay session(ex_, tunnel_side, *native, &hooks,
                         policy::WsSessionPolicies::relay_options(
                             pol, bytes.Add({{"alias", alias}, {"direction", "client_to_server"}}),
                             bytes.Add({{"alias", alias}, {"direction", "server_to_client"}})));
    hooks.opened();
    d_.metrics.ws_sessions.Increment();
    co_await ws_sessions_.run(session);
    d_.metrics.ws_sessions.Decrement();
    const auto& st = session.stats();
    d_.metrics.ws_messages.Add({{"alias", alias}, {"direction", "client_to_server"}})
        .Increment(static_cast<double>(st.messages[0]));
    d_.metrics.ws_messages.Add({{"alias", alias}, {"direction", "server_to_client"}})
        .Increment(static_cast<double>(st.messages[1]));
    co_await tunnel_side.drain(2s);
    hooks.closed(st, decisions);
  } catch (...) {
    failed = std::current_exception();
  }
  // `cat` (which holds `pol`) and `hold` (the concurrency slots) lived
  // as long as the session.
  (void)cat;
  (void)hold;
  // A session, not a request: its own duration histogram.
  d_.metrics.ws_duration.Add({{"alias", alias}}, kSessionBuckets)
      .Observe(std::chrono::duration<double>(Clock::now() - started).count());
  log::ExchangeRecord rec;
  rec.request_id = logged.request_id;
  rec.client = logged.client_ip;
  rec.method = "GET";
  rec.path = logged.path;
  rec.api = logged.api;
  rec.application = logged.application;
  rec.alias = alias;
  rec.status = 101;
  rec.websocket = true;
  rec.duration_ms = std::chrono::duration<double, std::milli>(Clock::now() - started).count();
  tracing::end_exchange(span, rec);
  log::log_exchange(rec);
  if (failed) std::rethrow_exception(failed);
}

}  // namespace postern::connector
