#include "broker/exchange_router.hpp"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>

#include <algorithm>

#include "common/error.hpp"
#include "common/exchange.hpp"
#include "common/observability/log.hpp"
#include "common/observability/metric_children.hpp"
#include "common/observability/tracing.hpp"

namespace postern::broker {

namespace tv1 = tunnel::v1;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// One exchange through the broker.
struct Route {
  explicit Route(asio::any_io_executor ex) : wake(std::move(ex)) {}
  BrokerLane* edge = nullptr;
  std::uint64_t edge_id = 0;
  BrokerLane* connector = nullptr;  // null while a connector is looked for
  std::uint64_t connector_id = 0;
  Registry::Pick pick;
  std::string alias, request_id;
  std::string api;  // as the edge named it: what refusals tell the client (never the alias)
  Clock::time_point started = Clock::now();
  std::chrono::milliseconds connector_wait{0};
  tunnel::Direction request{tunnel::Direction::Side::request};
  tunnel::Direction response{tunnel::Direction::Side::response};
  // What each side may still send (tunnel.proto, "Credit").
  tunnel::CreditCount edge_may_send, connector_may_send;
  // The edge's frames while a connector is looked for (bounded: its
  // initial credit), replayed once one is found.
  std::vector<tv1::Frame> held;
  std::size_t held_bytes = 0;
  std::size_t refusal_bytes = 0;  // a refused upgrade's body
  bool closed_by_broker = false;  // a drain closed both sides: their messages are dropped
  bool websocket_open = false;    // counted in the sessions gauge
  bool done = false;
  Event wake;  // the edge gave up, or a connector may be there
  tracing::Span span;  // the broker's part, a child of the edge's
};

namespace {

// What the client called, for refusals it reads: the API, never the alias
// (an internal name) that only logs carry.
std::string called(const Route& r) { return r.api.empty() ? "this route" : "API '" + r.api + "'"; }

// The edge's frames held while a connector is looked for: a head of up to
// 64 KiB of headers and what its initial credit lets it send.
constexpr std::size_t kMaxHeldBytes = (64u << 10) + tunnel::kInitialCredit + tunnel::kBodyPieceBytes;

// How long after a broker start, or the loss of an alias' last connector,
// one is expected to (re)attach: an exchange may wait for it (RequestHead
// connector_wait_ms), rather than be refused at once.
constexpr std::chrono::seconds kAttachExpected{10};

bool is_data(const tv1::Frame& f) {
  return f.kind_case() == tv1::Frame::kBody || f.kind_case() == tv1::Frame::kWsMessage;
}

std::size_t max_piece(const tv1::Frame& f) {
  return f.kind_case() == tv1::Frame::kBody ? tunnel::kBodyPieceBytes : tunnel::kWsPieceBytes;
}

}  // namespace

// ------------------------------------------------------------ BrokerLane

BrokerLane::BrokerLane(ExchangeRouter& router, Side side, std::unique_ptr<tunnel::LaneIo> io, std::string who,
                       std::shared_ptr<Session> session)
    : router_(router), side_(side), lane_(router.executor(), std::move(io), router.frames_per_message()),
      who_(std::move(who)), session_(std::move(session)) {
  router_.add(this);
}

BrokerLane::~BrokerLane() { router_.remove(this); }

asio::awaitable<void> BrokerLane::run() {
  co_await lane_.run(*this);
  router_.lane_ended(*this);
}

void BrokerLane::on_frame(tv1::Frame&& f) {
  if (side_ == Side::edge) {
    router_.from_edge(*this, std::move(f));
  } else {
    router_.from_connector(*this, std::move(f));
  }
}

void BrokerLane::on_message() {
  auto* c = side_ == Side::edge ? router_.metrics_.messages_from_edges : router_.metrics_.messages_from_connectors;
  if (c) c->Increment();
}

void BrokerLane::drain() {
  if (draining_) return;
  draining_ = true;
  lane_.send_drain();
}

// ------------------------------------------------------------ ExchangeRouter

ExchangeRouter::ExchangeRouter(asio::any_io_executor ex, Registry& registry, Options options, RouterMetrics metrics)
    : ex_(ex), registry_(registry), options_(options), metrics_(metrics), idle_(ex) {
  idle_.set();
}

ExchangeRouter::~ExchangeRouter() = default;

void ExchangeRouter::remove(BrokerLane* lane) { std::erase(lanes_, lane); }

std::size_t ExchangeRouter::lanes(BrokerLane::Side side) const {
  return static_cast<std::size_t>(std::count_if(lanes_.begin(), lanes_.end(), [&](const BrokerLane* l) {
    return l->side() == side && !l->lane_.over();
  }));
}

void ExchangeRouter::close_lanes() {
  for (auto* l : std::vector<BrokerLane*>(lanes_)) l->lane_.close();
}

void ExchangeRouter::abort_lanes() {
  for (auto* l : std::vector<BrokerLane*>(lanes_)) l->lane_.abort();
}

// The edge ended the exchange: its client sent what HTTP does not allow
// (client_error) or went away (client_gone), the edge stopped waiting
// before a connector took the exchange (abandoned) or for its answer
// (edge_timeout). Logged and counted as theirs, never as the connector's.
std::string ExchangeRouter::ended_by_edge(const Route& r, const tv1::Error& e) {
  std::string result;
  if (e.code() == tv1::ERROR_CODE_BAD_REQUEST || e.code() == tv1::ERROR_CODE_PAYLOAD_TOO_LARGE) {
    result = "client_error";
  } else if (!r.connector) {
    result = "abandoned";
  } else if (e.code() == tv1::ERROR_CODE_CLIENT_GONE) {
    result = "client_gone";
  } else if (e.code() == tv1::ERROR_CODE_UPSTREAM_TIMEOUT) {
    result = "edge_timeout";
  } else {
    result = error_label(e.code());
  }
  POSTERN_LOG(info, "exchange ended by the edge")
      .kv("request_id", r.request_id)
      .kv("trace_id", r.span.trace_id())
      .kv("alias", r.alias)
      .kv("result", result)
      .kv("reason", e.message());
  return result;
}

// Results are snake_case label values (error_label()).
void ExchangeRouter::count(const Route& r, const std::string& result) {
  if (metrics_.exchanges) metrics_.exchanges->get({r.alias, result}).Increment();
}

bool ExchangeRouter::attach_expected(const std::string& alias) const {
  const auto since = std::max(started_at_, registry_.lost_at(alias).value_or(started_at_));
  return Clock::now() - since < kAttachExpected;
}

// ------------------------------------------------------------ from the edge

void ExchangeRouter::from_edge(BrokerLane& lane, tv1::Frame&& f) {
  const auto it = lane.routes_.find(f.exchange());
  if (it == lane.routes_.end()) {
    // A head opens an exchange; anything else is for one that is over.
    if (!f.has_request_head() || f.exchange() == 0) return;
    auto r = std::make_shared<Route>(ex_);
    r->edge = &lane;
    r->edge_id = f.exchange();
    lane.routes_[r->edge_id] = r;
    open(r, std::move(f));
    return;
  }
  auto r = it->second;
  if (!r->connector) {
    // Still looking for a connector: the edge giving up ends it; the rest
    // waits (bounded) to be replayed.
    if (f.has_error()) {
      end_route(*r, ended_by_edge(*r, f.error()));
      return;
    }
    r->held_bytes += f.ByteSizeLong();
    if (r->held_bytes > kMaxHeldBytes) {
      violation(*r, "edge", lane.who(), "more than its initial credit before the exchange was taken");
      return;
    }
    r->held.push_back(std::move(f));
    return;
  }
  forward_to_connector(*r, std::move(f));
}

void ExchangeRouter::forward_to_connector(Route& r, tv1::Frame&& f) {
  std::string wrong = r.request.accept(f);
  if (wrong.empty() && is_data(f)) {
    if (tunnel::data_bytes(f) > max_piece(f)) {
      wrong = "a piece over " + std::to_string(max_piece(f) >> 10) + " KiB";
    } else if (!r.edge_may_send.take(tunnel::data_bytes(f))) {
      wrong = "a " + tunnel::frame_kind(f) + " piece past its credit";
    }
  }
  if (!wrong.empty()) {
    violation(r, "edge", r.edge->who(), wrong);
    return;
  }
  switch (f.kind_case()) {
    case tv1::Frame::kCredit: {
      const std::uint64_t pass = r.connector_may_send.give(f.credit(), options_.response_window);
      if (pass == 0) return;
      f.set_credit(pass);
      break;
    }
    case tv1::Frame::kBody:
      if (metrics_.bytes_up) metrics_.bytes_up->Increment(static_cast<double>(f.body().size()));
      break;
    case tv1::Frame::kWsMessage:
      if (r.closed_by_broker) return;
      if (metrics_.bytes_up) metrics_.bytes_up->Increment(static_cast<double>(f.ws_message().data().size()));
      break;
    case tv1::Frame::kWsClose:
      // After a drain's close both sides have ours; theirs ends the session.
      if (r.closed_by_broker) {
        maybe_over(r);
        return;
      }
      break;
    default:
      break;
  }
  const bool error = f.has_error();
  const std::string result = error ? ended_by_edge(r, f.error()) : std::string();
  f.set_exchange(r.connector_id);
  r.connector->lane_.send(std::move(f));
  if (error) {
    end_route(r, result);
    return;
  }
  maybe_over(r);
}

// ------------------------------------------------------------ from the connector

void ExchangeRouter::from_connector(BrokerLane& lane, tv1::Frame&& f) {
  const auto it = lane.routes_.find(f.exchange());
  if (it != lane.routes_.end()) {
    auto r = it->second;
    forward_to_edge(*r, std::move(f));
    return;
  }
  // A frame for an exchange that is over is dropped (it crossed the end on
  // the way); one for an exchange the broker never opened is a forgery or
  // a bug: logged, and that id is told so. The lane carries on.
  if (f.exchange() != 0 && f.exchange() < lane.next_id_) return;
  const std::string wrong =
      "a " + tunnel::frame_kind(f) + " frame for exchange " + std::to_string(f.exchange()) + ", which it was never given";
  POSTERN_LOG(error, "connector protocol violation").kv("connector", lane.who()).kv("error", wrong);
  if (!f.has_error()) {
    lane.lane_.send(tunnel::error_frame(f.exchange(), tv1::ERROR_CODE_UPSTREAM_PROTOCOL,
                                        "connector '" + lane.who() + "' broke the tunnel protocol: " + wrong));
  }
}

void ExchangeRouter::forward_to_edge(Route& r, tv1::Frame&& f) {
  std::string wrong = r.response.accept(f);
  if (wrong.empty() && is_data(f)) {
    if (tunnel::data_bytes(f) > max_piece(f)) {
      wrong = "a piece over " + std::to_string(max_piece(f) >> 10) + " KiB";
    } else if (!r.connector_may_send.take(tunnel::data_bytes(f))) {
      wrong = "a " + tunnel::frame_kind(f) + " piece past its credit";
    }
  }
  // A refused upgrade's body is bounded by what the edge keeps of it.
  if (wrong.empty() && f.has_body() && r.request.websocket() &&
      (r.refusal_bytes += f.body().size()) > kMaxRefusalBodyBytes) {
    wrong = "a refusal body over " + std::to_string(kMaxRefusalBodyBytes >> 20) + " MiB";
  }
  if (!wrong.empty()) {
    violation(r, "connector", r.connector->who(), wrong);
    return;
  }
  switch (f.kind_case()) {
    case tv1::Frame::kCredit:
      f.set_credit(r.edge_may_send.give(f.credit()));
      break;
    case tv1::Frame::kResponseHead:
      if (r.response.upgraded()) {
        r.request.upgrade();
        r.websocket_open = true;
        if (metrics_.websocket_sessions) metrics_.websocket_sessions->Increment();
      }
      break;
    case tv1::Frame::kBody:
      if (metrics_.bytes_down) metrics_.bytes_down->Increment(static_cast<double>(f.body().size()));
      break;
    case tv1::Frame::kWsMessage:
      if (r.closed_by_broker) return;
      if (metrics_.bytes_down) metrics_.bytes_down->Increment(static_cast<double>(f.ws_message().data().size()));
      break;
    case tv1::Frame::kWsClose:
      if (r.closed_by_broker) {
        maybe_over(r);
        return;
      }
      break;
    default:
      break;
  }
  const bool error = f.has_error();
  const std::string result = error ? error_label(f.error().code()) : std::string();
  f.set_exchange(r.edge_id);
  r.edge->lane_.send(std::move(f));
  if (error) {
    end_route(r, result);
    return;
  }
  maybe_over(r);
}

// ------------------------------------------------------------ opening

void ExchangeRouter::open(const std::shared_ptr<Route>& r, tv1::Frame&& head) {
  auto& h = *head.mutable_request_head();
  // The trace goes on with the broker's span as the parent. The edge's
  // traceparent is checked as any other: one that is not valid starts a
  // new trace.
  const auto in = tracing::read_headers(h.headers());
  r->span = tracing::Span::begin("relay", tracing::Kind::server, in);
  tracing::write_traceparent(*h.mutable_headers(), r->span.traceparent(), !in.tracestate.empty());
  r->alias = h.alias();
  r->api = h.api();
  r->request_id = h.request_id();
  r->connector_wait = std::chrono::milliseconds(h.connector_wait_ms());
  r->response.set_websocket(h.websocket());  // a 101 answers only an upgrade
  r->held.push_back(std::move(head));
  if (draining_) {
    refuse(*r, tv1::ERROR_CODE_DRAINING, "broker is draining");
    return;
  }
  if (try_assign(r)) return;
  asio::co_spawn(ex_, wait_for_connector(r), asio::detached);
}

bool ExchangeRouter::try_assign(const std::shared_ptr<Route>& r) {
  auto pick = registry_.pick(r->alias);
  if (!pick) return false;
  auto* lane = static_cast<BrokerLane*>(pick.lane);
  r->pick = pick;
  r->connector = lane;
  r->connector_id = lane->next_id_++;
  lane->routes_[r->connector_id] = r;
  if (in_flight_++ == 0) idle_.reset();
  if (metrics_.in_flight) metrics_.in_flight->Increment();
  auto held = std::move(r->held);
  r->held.clear();
  for (auto& f : held) {
    if (r->done) break;
    forward_to_connector(*r, std::move(f));
  }
  return true;
}

// With no connector for the alias, the exchange may wait for one as long as
// the edge allows, if one is expected (attach_expected); with connectors
// attached but no lane to take it (lanes reconnecting), up to park_wait.
asio::awaitable<void> ExchangeRouter::wait_for_connector(std::shared_ptr<Route> r) {
  const auto arrived = Clock::now();
  const auto give_up = arrived + options_.park_wait;
  const auto attach_until = std::min(give_up, arrived + r->connector_wait);
  for (;;) {
    if (r->done) co_return;
    if (draining_) {
      refuse(*r, tv1::ERROR_CODE_DRAINING, "broker is draining");
      co_return;
    }
    if (try_assign(r)) co_return;
    const bool serves = registry_.serves(r->alias);
    const auto until = serves ? give_up : attach_until;
    if (Clock::now() >= until || (!serves && !attach_expected(r->alias))) {
      if (serves) {
        refuse(*r, tv1::ERROR_CODE_NO_CAPACITY, "every connector for " + called(*r) + " is busy");
      } else {
        const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - arrived);
        refuse(*r, tv1::ERROR_CODE_NO_CONNECTOR,
               "no connector is attached for " + called(*r) +
                   (waited >= 1ms ? " (waited " + std::to_string(waited.count()) + " ms for one)" : ""));
      }
      co_return;
    }
    r->wake.reset();
    const auto id = registry_.add_waiter(r->alias, [w = std::weak_ptr<Route>(r)] {
      if (auto p = w.lock()) p->wake.set();
    });
    co_await r->wake.wait_for(until - Clock::now());
    registry_.remove_waiter(id);
  }
}

void ExchangeRouter::refuse(Route& r, tv1::ErrorCode code, const std::string& why) {
  POSTERN_LOG(info, "exchange rejected")
      .kv("request_id", r.request_id)
      .kv("trace_id", r.span.trace_id())
      .kv("alias", r.alias)
      .kv("reason", why);
  if (r.edge && !r.edge->lane_.over()) r.edge->lane_.send(tunnel::error_frame(r.edge_id, code, why));
  end_route(r, error_label(code));
}

// One side broke the protocol: logged, and the exchange ends on both sides
// with UPSTREAM_PROTOCOL. The lanes carry on.
void ExchangeRouter::violation(Route& r, const char* side, const std::string& who, const std::string& wrong) {
  POSTERN_LOG(error, std::string(side) + " protocol violation")
      .kv(side, who)
      .kv("request_id", r.request_id)
      .kv("trace_id", r.span.trace_id())
      .kv("error", wrong);
  const std::string named = std::string(side) + (who.empty() ? "" : " '" + who + "'");
  const std::string message = named + " broke the tunnel protocol: " + wrong;
  if (r.edge && !r.edge->lane_.over()) {
    r.edge->lane_.send(tunnel::error_frame(r.edge_id, tv1::ERROR_CODE_UPSTREAM_PROTOCOL, message));
  }
  if (r.connector && !r.connector->lane_.over()) {
    r.connector->lane_.send(tunnel::error_frame(r.connector_id, tv1::ERROR_CODE_UPSTREAM_PROTOCOL, message));
  }
  end_route(r, "protocol_error");
}

// ------------------------------------------------------------ ending

void ExchangeRouter::maybe_over(Route& r) {
  // Over when both directions ended; an HTTP response (or a refused
  // upgrade) that ended ends it too: what is left of the request has nobody
  // to go to, and the connector is told so.
  if (r.response.ended() && r.request.ended()) {
    end_route(r, "ok");
  } else if (r.response.ended() && !r.response.upgraded()) {
    if (r.connector && !r.connector->lane_.over()) {
      r.connector->lane_.send(
          tunnel::error_frame(r.connector_id, tv1::ERROR_CODE_CLIENT_GONE, "the response is complete"));
    }
    end_route(r, "ok");
  }
}

void ExchangeRouter::end_route(Route& r, const std::string& result) {
  if (r.done) return;
  r.done = true;
  r.wake.set();
  if (r.edge) r.edge->routes_.erase(r.edge_id);
  if (r.connector) {
    r.connector->routes_.erase(r.connector_id);
    registry_.finished(r.pick);
    if (metrics_.in_flight) metrics_.in_flight->Decrement();
    if (--in_flight_ == 0) idle_.set();
    if (metrics_.duration) metrics_.duration->Observe(std::chrono::duration<double>(Clock::now() - r.started).count());
  }
  if (r.websocket_open && metrics_.websocket_sessions) metrics_.websocket_sessions->Decrement();
  r.held.clear();
  count(r, result);
  log::ExchangeRecord rec;
  rec.request_id = r.request_id;
  rec.api = r.api;
  rec.alias = r.alias;
  if (r.pick.session) rec.connector = r.pick.session->connector_id;
  rec.result = result;
  rec.websocket = r.websocket_open;
  rec.duration_ms = std::chrono::duration<double, std::milli>(Clock::now() - r.started).count();
  tracing::end_exchange(r.span, rec);
  log::log_exchange(rec);
}

void ExchangeRouter::lane_ended(BrokerLane& lane) {
  auto routes = std::move(lane.routes_);
  lane.routes_.clear();
  for (auto& [_, r] : routes) {
    if (r->done) continue;
    if (lane.side() == BrokerLane::Side::edge) {
      if (r->connector && !r->connector->lane_.over()) {
        r->connector->lane_.send(
            tunnel::error_frame(r->connector_id, tv1::ERROR_CODE_CLIENT_GONE, "the edge went away"));
      }
      end_route(*r, r->connector ? "edge_gone" : "abandoned");
    } else {
      POSTERN_LOG(warn, "connector lost mid-exchange")
          .kv("connector", lane.who())
          .kv("request_id", r->request_id)
          .kv("trace_id", r->span.trace_id());
      if (r->edge && !r->edge->lane_.over()) {
        r->edge->lane_.send(tunnel::error_frame(r->edge_id, tv1::ERROR_CODE_CONNECTOR_LOST,
                                                "connector '" + lane.who() + "' went away mid-exchange"));
      }
      end_route(*r, "connector_lost");
    }
  }
  if (lane.session()) registry_.remove_lane(lane.session(), &lane);
}

void ExchangeRouter::drain() {
  draining_ = true;
  registry_.wake_all();
  for (auto* l : lanes_) {
    if (l->side() != BrokerLane::Side::edge) continue;
    l->drain();
    // WebSocket sessions would outlast any drain: both sides get 1001 now,
    // and each session ends with their closing handshakes.
    for (auto& [_, r] : l->routes_) {
      if (!r->connector || !r->response.upgraded() || r->closed_by_broker || r->done) continue;
      r->closed_by_broker = true;
      const std::string reason = "broker draining";
      tv1::Frame f;
      f.mutable_ws_close()->set_code(1001);
      f.mutable_ws_close()->set_reason(reason);
      if (!r->response.ended()) {
        tv1::Frame to_edge = f;
        to_edge.set_exchange(r->edge_id);
        r->edge->lane_.send(std::move(to_edge));
      }
      if (!r->request.ended()) {
        f.set_exchange(r->connector_id);
        r->connector->lane_.send(std::move(f));
      }
    }
  }
}

}  // namespace postern::broker
