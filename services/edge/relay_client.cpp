#include "edge/relay_client.hpp"

#include <grpcpp/grpcpp.h>
#include <prometheus/counter.h>
#include <prometheus/registry.h>

#include <algorithm>
#include <optional>

#include "common/config/yaml_proto.hpp"
#include "common/event.hpp"
#include "common/grpc/snapshot_watcher.hpp"
#include "common/observability/trace_context.hpp"
#include "common/tunnel/exchange_io.hpp"
#include "edge/broker_set.hpp"

namespace postern::edge {

namespace tv1 = tunnel::v1;
namespace gb = grpc_bridge;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

// How long a broker that said it is draining, or could not be reached, is
// tried only after the others.
constexpr auto kAvoidDraining = 2s;
constexpr auto kAvoidUnreachable = 1s;
// The last broker that can be reached may hold a request this long for a
// connector to attach, when it has none for the alias but expects one (it
// restarted, or the alias' connectors did; see
// RequestHead.connector_wait_ms). A connector's attach backoff is at most
// 1 s, jittered by 20 %.
constexpr auto kWaitForConnector = 2000ms;

// How long one attempt may wait. Attempts with a better broker left to try
// fail fast instead, so that the next one is tried.
struct Patience {
  // The last broker of the plan: it waits up to kWaitForBroker for a lane.
  bool last = false;
  // How long the broker may hold the exchange for a connector to attach
  // (RequestHead.connector_wait_ms).
  std::chrono::milliseconds connector_wait{0};
};

// RFC 9110 9.2.2: a request the broker may already have passed on can be
// sent again only if sending it twice means the same as sending it once.
bool idempotent(std::string_view method) {
  return method == "GET" || method == "HEAD" || method == "OPTIONS" || method == "TRACE" || method == "PUT" ||
         method == "DELETE";
}

// Why an attempt may go to another broker (none: it may not).
enum class Retry { none, draining, no_connector, unreachable };

const char* retry_reason(Retry r) {
  switch (r) {
    case Retry::draining: return "draining";
    case Retry::no_connector: return "no_connector";
    case Retry::unreachable: return "unreachable";
    case Retry::none: break;
  }
  return "none";
}

// A refusal the broker sends before it hands the exchange to a connector.
Retry refusal(tv1::ErrorCode code) {
  if (code == tv1::ERROR_CODE_DRAINING) return Retry::draining;
  if (code == tv1::ERROR_CODE_NO_CONNECTOR) return Retry::no_connector;
  return Retry::none;
}

// The request body, read once for every broker tried: notes whether any of
// it was taken from the client (then no other broker may have the exchange),
// and answers "ended" again to a later attempt of an empty body.
class OnceBody final : public BodySource {
 public:
  explicit OnceBody(BodySource& inner) : inner_(inner) {}
  asio::awaitable<bool> next(std::string_view& chunk) override {
    if (ended_) co_return false;
    const bool more = co_await inner_.next(chunk);
    if (more) {
      consumed_ = true;
    } else {
      ended_ = true;
    }
    co_return more;
  }
  const Trailers& trailers() const override { return inner_.trailers(); }
  bool consumed() const { return consumed_; }

 private:
  BodySource& inner_;
  bool consumed_ = false;
  bool ended_ = false;
};

// The first chunk of a body already read (to tell an empty body from one
// that has pieces), then the rest.
class PeekedBody final : public BodySource {
 public:
  PeekedBody(BodySource& inner, std::string_view first) : inner_(inner), first_(first), have_(true) {}
  asio::awaitable<bool> next(std::string_view& chunk) override {
    if (have_) {
      have_ = false;
      chunk = first_;
      co_return true;
    }
    co_return co_await inner_.next(chunk);
  }
  const Trailers& trailers() const override { return inner_.trailers(); }

 private:
  BodySource& inner_;
  std::string_view first_;
  bool have_;
};

// The request body on its way up, beside the response coming down: a
// native service may answer before it has read the whole request.
struct Upload {
  explicit Upload(asio::any_io_executor ex) : ex(ex), done(ex) {}

  // Sends the body on `x`: just its end when it is `bodyless`; else
  // `chunk` first when the caller read it already (`have_chunk`), then the
  // rest, in a coroutine of its own that sets `done` when it is over.
  void start(const std::shared_ptr<tunnel::Exchange>& x, BodySource& body, bool bodyless, bool have_chunk,
             std::string_view chunk) {
    if (bodyless) {
      tv1::Frame end;
      *end.mutable_end()->mutable_trailers() = body.trailers();
      x->send(std::move(end));
      done.set();
      return;
    }
    BodySource* src = &body;
    if (have_chunk) src = &peeked.emplace(body, chunk);
    asio::co_spawn(
        ex, [x, src]() -> asio::awaitable<void> { co_await tunnel::send_body(*x, *src); },
        [this, x](std::exception_ptr e) {
          if (e) {
            failure = e;
            // The client's fault (a malformed chunk: 400), or it went away:
            // the far side says so in its logs and counts.
            try {
              std::rethrow_exception(e);
            } catch (const ExchangeError& err) {
              const auto code = err.code();
              const bool clients = code == tv1::ERROR_CODE_CLIENT_GONE || code == tv1::ERROR_CODE_PAYLOAD_TOO_LARGE;
              x->abandon(clients ? code : tv1::ERROR_CODE_BAD_REQUEST,
                         std::string("the client's request body could not be read: ") + err.what());
            } catch (const std::exception& err) {
              x->abandon(tv1::ERROR_CODE_INTERNAL, std::string("the request body could not be relayed: ") + err.what());
            }
          }
          done.set();
        });
  }

  asio::any_io_executor ex;
  Event done;
  std::exception_ptr failure;  // the client's body could not be read (malformed, cut)
  std::optional<PeekedBody> peeked;
};

}  // namespace

struct RelayClient::Impl {
  asio::any_io_executor ex;
  std::shared_ptr<BrokerSet> brokers;  // shared with its resolver and lanes
  prometheus::Family<prometheus::Counter>* retries = nullptr;
  std::unique_ptr<gb::SnapshotWatcher> watcher;
  std::shared_ptr<BrokerLink> watching;
  bool watch_stopped = false;

  // ------------------------------------------------------------ failover

  // How attempt `i` of `plan`, with `budget` left, may wait. The last
  // broker that could take the exchange (every one after it is draining)
  // waits for a lane, since a moment's wait beats failing at once: while
  // one broker drains, the other may be reconnecting after its own
  // restart. The last one that can be reached (every broker after it is
  // down or draining) may hold the exchange for a connector.
  static Patience patience(const std::vector<std::shared_ptr<BrokerLink>>& plan, std::size_t i,
                           std::chrono::milliseconds budget) {
    bool rest_down = true, rest_draining = true;
    for (std::size_t j = i + 1; j < plan.size(); ++j) {
      rest_draining = rest_draining && plan[j]->draining();
      rest_down = rest_down && (plan[j]->draining() || BrokerSet::down(*plan[j]));
    }
    return {.last = rest_draining,
            .connector_wait = rest_down ? std::min<std::chrono::milliseconds>(kWaitForConnector, budget)
                                        : std::chrono::milliseconds(0)};
  }

  void count_retry(const BrokerLink& from, const BrokerLink& to, Retry why, const tv1::RequestHead& head) {
    if (retries) retries->Add({{"reason", retry_reason(why)}}).Increment();
    POSTERN_LOG(info, "exchange sent to another broker")
        .kv("request_id", head.request_id())
        .kv("trace_id", tracing::trace_id_in(head.headers()))
        .kv("from", from.shown)
        .kv("to", to.shown)
        .kv("reason", retry_reason(why));
  }

  // ------------------------------------------------------------ one attempt

  // The answer when `b` has no lane to take an exchange: it drains (it
  // would refuse), or none came up (at once, or within kWaitForBroker when
  // it was waited for). Another broker may have the exchange either way.
  [[noreturn]] void no_lane(BrokerLink& b, const Patience& patience, Retry& retry) {
    if (b.draining_now()) {
      retry = Retry::draining;
      brokers->avoid(b, kAvoidDraining);
      throw ExchangeError(tv1::ERROR_CODE_DRAINING, "the broker at " + b.shown + " is draining");
    }
    brokers->avoid(b, kAvoidUnreachable);
    retry = Retry::unreachable;
    throw ExchangeError(tv1::ERROR_CODE_UPSTREAM_UNREACHABLE,
                        "cannot reach the broker at " + b.shown + ": " +
                            (patience.last ? "no connection within " +
                                                 std::to_string(std::chrono::milliseconds(kWaitForBroker).count()) +
                                                 " ms"
                                           : std::string("no connection up")));
  }

  // The answer to an exchange that ended before a response head: the lane
  // ended (the broker could not be reached, or went), or the head timed
  // out. Sets `retry` when another broker may have it.
  [[noreturn]] void no_answer(BrokerLink& b, const tunnel::Exchange& x, const tv1::RequestHead& head,
                              bool timed_out, bool anything, bool sent, bool body_consumed,
                              std::chrono::milliseconds head_timeout, Retry& retry, const std::string& what) {
    if (timed_out) {
      throw ExchangeError(tv1::ERROR_CODE_UPSTREAM_TIMEOUT,
                          what + " within " + std::to_string(head_timeout.count()) + " ms");
    }
    if (!anything) {
      brokers->avoid(b, kAvoidUnreachable);
      if ((!sent || idempotent(head.method())) && !body_consumed) retry = Retry::unreachable;
      throw ExchangeError(tv1::ERROR_CODE_UPSTREAM_UNREACHABLE,
                          "cannot reach the broker at " + b.shown + ": " + x.cut_reason());
    }
    throw ExchangeError(tv1::ERROR_CODE_CONNECTOR_LOST, "the exchange ended with " + what + " (" + x.cut_reason() + ")");
  }

  // One exchange on one broker. Throws ExchangeError as invoke() does; sets
  // `retry` when the broker refused it before passing it on, or was not
  // reached, so that another broker may have it.
  asio::awaitable<void> invoke_on(BrokerLink& b, const tv1::RequestHead& head, OnceBody& body, ResponseSink& sink,
                                  std::chrono::milliseconds budget, std::chrono::milliseconds head_timeout,
                                  Retry& retry, const Patience& patience) {
    auto lane = co_await brokers->lane_of(b, patience.last);
    if (!lane) no_lane(b, patience, retry);
    // A request without a body crosses as one message: head, credit, end.
    std::string_view chunk;
    bool have_chunk = false, bodyless = false;
    if (head.content_length() == 0) {
      have_chunk = co_await body.next(chunk);
      bodyless = !have_chunk;
    }
    tv1::RequestHead h = head;
    h.set_connector_wait_ms(static_cast<std::uint32_t>(patience.connector_wait.count()));
    auto x = lane->open(std::move(h));
    bool got_head = false, timed_out = false, anything = false;
    Deadline head_deadline(ex, budget, [&] {
      if (!got_head) {
        timed_out = true;
        x->abandon(tv1::ERROR_CODE_UPSTREAM_TIMEOUT, "the edge gave up waiting for a response");
      }
    });
    Upload upload(ex);
    upload.start(x, body, bodyless, have_chunk, chunk);
    std::exception_ptr failure;
    bool ended = false;
    try {
      tunnel::Direction dir(tunnel::Direction::Side::response);
      tv1::Frame f;
      for (;;) {
        const bool got = co_await x->next(f);
        if (!got) break;
        if (f.has_credit()) continue;
        const bool first = !anything;
        anything = true;
        if (std::string wrong = dir.accept(f); !wrong.empty()) {
          x->abandon(tv1::ERROR_CODE_UPSTREAM_PROTOCOL, "out of order: " + wrong);
          throw ExchangeError(tv1::ERROR_CODE_UPSTREAM_PROTOCOL, "the broker sent " + wrong);
        }
        if (f.has_error()) {
          if (first) retry = refusal(f.error().code());
          throw ExchangeError(f.error().code(), f.error().message());
        }
        if (f.has_response_head()) {
          got_head = true;
          head_deadline.disarm();
          co_await sink.head(*f.mutable_response_head());
          if (!x->ready()) co_await sink.idle();
        } else if (f.has_body()) {
          const std::size_t n = f.body().size();
          co_await sink.body(f.body());
          x->consumed(n);
        } else if (f.has_end()) {
          co_await sink.end(f.end().trailers());
          ended = true;
          break;
        }
      }
    } catch (...) {
      failure = std::current_exception();
    }
    // Whatever went up of the body, no more goes.
    x->stop_sending();
    co_await upload.done.wait();
    if (retry == Retry::draining) brokers->avoid(b, kAvoidDraining);
    // A body that could not be read is the client's fault (a malformed
    // chunk: 400), whatever the exchange said after it was abandoned.
    if (upload.failure && !ended) std::rethrow_exception(upload.failure);
    if (failure) std::rethrow_exception(failure);
    if (ended) co_return;
    if (!got_head) no_answer(b, *x, head, timed_out, anything, x->may_have_left(), body.consumed(), head_timeout, retry,
                             "no response");
    throw ExchangeError(tv1::ERROR_CODE_CONNECTOR_LOST, "the response was cut off mid-body");
  }

  asio::awaitable<std::unique_ptr<WsTunnel>> open_on(const std::shared_ptr<BrokerLink>& b,
                                                     const tv1::RequestHead& head, std::chrono::milliseconds budget,
                                                     std::chrono::milliseconds head_timeout,
                                                     std::size_t max_message_bytes, Retry& retry,
                                                     const Patience& patience);
};

// ------------------------------------------------------------ RelayClient

RelayClient::RelayClient(asio::any_io_executor ex, const config::v1::RelayClient& cfg, prometheus::Registry* metrics,
                         std::chrono::seconds file_check_interval)
    : impl_(std::make_shared<Impl>()) {
  auto& im = *impl_;
  im.ex = ex;
  im.brokers = BrokerSet::start(ex, cfg, metrics, file_check_interval);
  if (metrics) {
    im.retries = &prometheus::BuildCounter()
                      .Name("postern_edge_broker_retries_total")
                      .Help("Exchanges sent on to another broker, by why the one tried could not take them")
                      .Register(*metrics);
  }
}

RelayClient::~RelayClient() { impl_->brokers->stop(); }

asio::awaitable<void> RelayClient::invoke(const tv1::RequestHead& head, BodySource& body, ResponseSink& sink,
                                          std::chrono::milliseconds head_timeout) {
  auto& im = *impl_;
  auto& brokers = *im.brokers;
  if (!brokers.resolved->is_set()) co_await brokers.resolved->wait_for(kWaitForBroker);
  const auto plan = brokers.plan();
  if (plan.empty()) brokers.throw_unresolved();
  OnceBody once(body);
  const auto until = Clock::now() + head_timeout;
  for (std::size_t i = 0;; ++i) {
    Retry retry = Retry::none;
    std::exception_ptr failure;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now());
    const auto budget = std::max(left, std::chrono::milliseconds(1));
    try {
      co_await im.invoke_on(*plan[i], head, once, sink, budget, head_timeout, retry, Impl::patience(plan, i, budget));
    } catch (...) {
      failure = std::current_exception();
    }
    if (!failure) co_return;
    const bool again = retry != Retry::none && i + 1 < plan.size() && !once.consumed() && !sink.started() &&
                       Clock::now() < until;
    if (!again) std::rethrow_exception(failure);
    im.count_retry(*plan[i], *plan[i + 1], retry, head);
  }
}

// ------------------------------------------------------------ WebSocket

struct WsTunnel::Impl {
  std::shared_ptr<BrokerLink> broker;  // its channel outlives the session
  std::unique_ptr<tunnel::ExchangeWsPort> port;
  tv1::ResponseHead head;
  std::string body;
  bool finished = false;
};

WsTunnel::WsTunnel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
WsTunnel::~WsTunnel() = default;
const tv1::ResponseHead& WsTunnel::head() const { return impl_->head; }
const std::string& WsTunnel::body() const { return impl_->body; }
net::WsPort* WsTunnel::port() { return impl_->head.status() == 101 ? impl_->port.get() : nullptr; }

asio::awaitable<void> WsTunnel::close() {
  if (impl_->finished) co_return;
  impl_->finished = true;
  co_await impl_->port->drain(std::chrono::seconds(2));
}

asio::awaitable<std::unique_ptr<WsTunnel>> RelayClient::Impl::open_on(const std::shared_ptr<BrokerLink>& b,
                                                                      const tv1::RequestHead& head,
                                                                      std::chrono::milliseconds budget,
                                                                      std::chrono::milliseconds head_timeout,
                                                                      std::size_t max_message_bytes, Retry& retry,
                                                                      const Patience& patience) {
  auto lane = co_await brokers->lane_of(*b, patience.last);
  if (!lane) no_lane(*b, patience, retry);
  tv1::RequestHead h = head;
  h.set_connector_wait_ms(static_cast<std::uint32_t>(patience.connector_wait.count()));
  auto x = lane->open(std::move(h));
  auto t = std::make_unique<WsTunnel::Impl>();
  t->broker = b;
  bool got_head = false, timed_out = false, anything = false;
  std::optional<ExchangeError> failure;
  {
    Deadline head_deadline(ex, budget, [&] {
      if (!got_head) {
        timed_out = true;
        x->abandon(tv1::ERROR_CODE_UPSTREAM_TIMEOUT, "the edge gave up waiting for the upgrade's answer");
      }
    });
    tv1::Frame f;
    for (;;) {
      const bool got = co_await x->next(f);
      if (!got) break;
      if (f.has_credit()) continue;
      const bool first = !anything;
      anything = true;
      if (f.has_response_head()) {
        got_head = true;
        head_deadline.disarm();
        t->head = std::move(*f.mutable_response_head());
        if (t->head.status() == 101) {
          t->port = std::make_unique<tunnel::ExchangeWsPort>(std::move(x), max_message_bytes);
          co_return std::make_unique<WsTunnel>(std::move(t));
        }
      } else if (f.has_body()) {
        if (t->body.size() < kMaxRefusalBodyBytes) t->body.append(f.body());
        x->consumed(f.body().size());
      } else if (f.has_end()) {
        t->finished = true;  // a refusal: the exchange is over
        t->port = std::make_unique<tunnel::ExchangeWsPort>(std::move(x), max_message_bytes);
        co_return std::make_unique<WsTunnel>(std::move(t));
      } else if (f.has_error()) {
        if (first) retry = refusal(f.error().code());
        failure.emplace(f.error().code(), f.error().message());
        break;
      }
    }
  }
  if (retry == Retry::draining) brokers->avoid(*b, kAvoidDraining);
  if (failure) throw *failure;
  no_answer(*b, *x, head, timed_out, anything, x->may_have_left(), false, head_timeout, retry,
            "no answer to the WebSocket upgrade");
}

asio::awaitable<std::unique_ptr<WsTunnel>> RelayClient::open_websocket(const tv1::RequestHead& head,
                                                                       std::chrono::milliseconds head_timeout,
                                                                       std::size_t max_message_bytes) {
  auto& im = *impl_;
  auto& brokers = *im.brokers;
  if (!brokers.resolved->is_set()) co_await brokers.resolved->wait_for(kWaitForBroker);
  const auto plan = brokers.plan();
  if (plan.empty()) brokers.throw_unresolved();
  const auto until = Clock::now() + head_timeout;
  for (std::size_t i = 0;; ++i) {
    Retry retry = Retry::none;
    std::exception_ptr failure;
    std::unique_ptr<WsTunnel> tunnel;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now());
    const auto budget = std::max(left, std::chrono::milliseconds(1));
    try {
      tunnel = co_await im.open_on(plan[i], head, budget, head_timeout, max_message_bytes, retry,
                                   Impl::patience(plan, i, budget));
    } catch (...) {
      failure = std::current_exception();
    }
    if (!failure) co_return tunnel;
    const bool again = retry != Retry::none && i + 1 < plan.size() && Clock::now() < until;
    if (!again) std::rethrow_exception(failure);
    im.count_retry(*plan[i], *plan[i + 1], retry, head);
  }
}

// ------------------------------------------------------------ config

asio::awaitable<void> RelayClient::watch_config(std::string client_id, std::function<std::uint64_t()> known,
                                                std::function<void(policy::v1::SignedSnapshot&&)> on_snapshot) {
  auto& im = *impl_;
  auto& brokers = *im.brokers;
  im.watcher = std::make_unique<gb::SnapshotWatcher>(im.ex, "broker", brokers.names_text, std::move(client_id));
  while (!brokers.resolved->is_set() && !im.watch_stopped) {
    co_await brokers.resolved->wait_for(1s);
  }
  if (im.watch_stopped) co_return;
  // A stream that ended because its broker went away (draining, gone):
  // the next one goes to another broker.
  im.watcher->on_end = [&im](const grpc::Status& st) {
    if (im.watching && st.error_code() == grpc::StatusCode::UNAVAILABLE) {
      im.brokers->avoid(*im.watching, kAvoidDraining);
    }
  };
  co_await im.watcher->run(
      [&im](grpc::ClientContext* ctx, const policy::v1::WatchRequest& req) {
        im.watching = im.brokers->plan().front();
        im.watcher->set_address(im.watching->shown);
        return im.watching->stub->PrepareAsyncWatchConfig(ctx, req, im.brokers->pump->cq());
      },
      std::move(known), std::move(on_snapshot));
}

void RelayClient::restart_watch() {
  if (impl_->watcher) impl_->watcher->restart();
}

void RelayClient::stop_watch() {
  impl_->watch_stopped = true;
  if (impl_->watcher) impl_->watcher->stop();
}

std::vector<RelayClient::BrokerState> RelayClient::brokers() const {
  std::vector<BrokerState> out;
  for (const auto& b : impl_->brokers->brokers) {
    BrokerState st;
    st.name = b->name;
    st.target = b->target;
    st.lanes = b->lanes.size();
    for (const auto& l : b->lanes) {
      if (l->lane().up()) ++st.lanes_up;
      st.exchanges += l->exchanges();
    }
    st.draining = b->draining();
    st.down = BrokerSet::down(*b);
    st.watching = impl_->watching == b;
    out.push_back(std::move(st));
  }
  return out;
}

}  // namespace postern::edge
