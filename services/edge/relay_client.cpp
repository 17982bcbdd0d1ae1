#include "edge/relay_client.hpp"

#include <grpcpp/grpcpp.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <algorithm>
#include <boost/asio/ip/tcp.hpp>
#include <optional>
#include <set>

#include "common/config/yaml_proto.hpp"
#include "common/event.hpp"
#include "common/grpc/bridge.hpp"
#include "common/grpc/channel.hpp"
#include "common/grpc/snapshot_watcher.hpp"
#include "common/tunnel/exchange_io.hpp"
#include "common/tunnel/lane_io.hpp"
#include "postern/tunnel/v1/tunnel.grpc.pb.h"

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
// A failure asks for the names to be resolved again, at most this often.
constexpr auto kMinResolveGap = 1s;
// When no lane to a broker is up, the last broker tried is waited for this
// long: a broker restarting while the other one drains is then a short
// wait, not a 502. Longer than gRPC's longest reconnect backoff (1 s,
// jittered by 20 %), so a broker that is back is reached; short enough that
// no broker at all still fails fast.
constexpr auto kWaitForBroker = 1500ms;
// One connect attempt to a broker may take this long. Edges and brokers
// share the DMZ, so a connect takes milliseconds; a broker that accepts and
// then says nothing is given up on (and ranked last) after this.
constexpr auto kBrokerConnectTimeout = 2000ms;
// The last broker that can be reached may hold a request this long for a
// connector to attach, when it has none for the alias but expects one (it
// restarted, or the alias' connectors did; see
// RequestHead.connector_wait_ms). A connector's attach backoff is at most
// 1 s, jittered by 20 %.
constexpr auto kWaitForConnector = 2000ms;
// A lane that ended is opened again after this, growing to 1 s while it
// keeps failing.
constexpr auto kLaneRetry = 100ms;

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

}  // namespace

// One broker address: its channel, its lanes, and how it fared lately.
struct BrokerLink {
  std::string name;    // host:port as configured
  std::string target;  // ipv4:a.b.c.d:port (what the channel dials)
  std::string shown;   // for messages: the name, and the address if it differs
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<tv1::Relay::Stub> stub;
  Clock::time_point avoid_until{};
  std::vector<std::shared_ptr<tunnel::Endpoint>> lanes;
  std::unique_ptr<Event> lane_changed;  // a lane came up, or ended
  bool stopped = false;

  // The up lane with the fewest exchanges, or null.
  std::shared_ptr<tunnel::Endpoint> usable_lane() const {
    std::shared_ptr<tunnel::Endpoint> best;
    for (const auto& l : lanes) {
      if (!l->usable() || !l->lane().up()) continue;
      if (!best || l->exchanges() < best->exchanges()) best = l;
    }
    return best;
  }
  bool draining() const {
    return !lanes.empty() && std::all_of(lanes.begin(), lanes.end(), [](const auto& l) { return l->draining(); });
  }
  void stop() {
    stopped = true;
    for (auto& l : lanes) l->lane().abort();
  }
};

struct RelayClient::Impl {
  asio::any_io_executor ex;
  config::v1::RelayClient cfg;
  std::vector<std::string> names;  // address, then addresses
  std::string names_text;
  std::shared_ptr<grpc::ChannelCredentials> creds;
  std::unique_ptr<gb::Pump> pump;
  std::vector<std::shared_ptr<BrokerLink>> brokers;
  std::size_t cursor = 0;
  Clock::duration resolve_interval;
  std::unique_ptr<Event> resolved;     // set after the first resolution that found a broker
  std::unique_ptr<Event> resolve_now;  // a failure asks for an early resolution
  std::string resolve_error;
  bool stopped = false;
  std::size_t lanes_per_broker = 1;
  tunnel::Endpoint::Options lane_options;
  prometheus::Family<prometheus::Counter>* retries = nullptr;
  prometheus::Gauge* known = nullptr;
  prometheus::Gauge* lanes_gauge = nullptr;
  prometheus::Histogram* frames_per_message = nullptr;
  std::unique_ptr<gb::SnapshotWatcher> watcher;
  std::shared_ptr<BrokerLink> watching;
  bool watch_stopped = false;

  // ------------------------------------------------------------ plans

  // Every broker once, starting one further round the ring each call: those
  // with a lane up first, then those that failed lately or are connecting,
  // then those whose channel is down (a last resort, not skipped: they may
  // be back).
  std::vector<std::shared_ptr<BrokerLink>> plan() {
    std::vector<std::shared_ptr<BrokerLink>> out;
    const std::size_t n = brokers.size();
    if (n == 0) return out;
    const std::size_t first = cursor++ % n;
    const auto now = Clock::now();
    std::vector<int> rank(n);
    for (std::size_t i = 0; i < n; ++i) {
      const auto& b = *brokers[i];
      rank[i] = down(b) ? 2 : !b.usable_lane() || now < b.avoid_until || b.draining() ? 1 : 0;
    }
    out.reserve(n);
    for (int r = 0; r <= 2; ++r) {
      for (std::size_t k = 0; k < n; ++k) {
        const std::size_t i = (first + k) % n;
        if (rank[i] == r) out.push_back(brokers[i]);
      }
    }
    return out;
  }

  static bool down(const BrokerLink& b) {
    const auto st = b.channel->GetState(false);
    return st == GRPC_CHANNEL_TRANSIENT_FAILURE || st == GRPC_CHANNEL_SHUTDOWN;
  }

  // How attempt `i` of `plan`, with `budget` left, may wait. The last
  // broker waits for a lane, since a moment's wait beats failing at once.
  // The last one that can be reached (every broker after it is down) may
  // hold the exchange for a connector.
  static Patience patience(const std::vector<std::shared_ptr<BrokerLink>>& plan, std::size_t i,
                           std::chrono::milliseconds budget) {
    bool rest_down = true;
    for (std::size_t j = i + 1; j < plan.size(); ++j) rest_down = rest_down && down(*plan[j]);
    return {.last = i + 1 == plan.size(),
            .connector_wait = rest_down ? std::min<std::chrono::milliseconds>(kWaitForConnector, budget)
                                        : std::chrono::milliseconds(0)};
  }

  void avoid(BrokerLink& b, Clock::duration d) {
    b.avoid_until = Clock::now() + d;
    resolve_now->set();
  }

  [[noreturn]] void throw_unresolved() const {
    throw ExchangeError(tv1::ERROR_CODE_UPSTREAM_UNREACHABLE,
                        "cannot reach the broker at " + names_text + ": " +
                            (resolve_error.empty() ? std::string("no address resolved yet") : resolve_error));
  }

  void count_retry(const BrokerLink& from, const BrokerLink& to, Retry why, const std::string& request_id) {
    if (retries) retries->Add({{"reason", retry_reason(why)}}).Increment();
    POSTERN_LOG(info, "exchange sent to another broker")
        .kv("request_id", request_id)
        .kv("from", from.shown)
        .kv("to", to.shown)
        .kv("reason", retry_reason(why));
  }

  // ------------------------------------------------------------ lanes

  // One lane slot of a broker: opened, run until it ends, opened again
  // (waiting for the broker's channel meanwhile), until the broker is
  // forgotten or the client stops.
  static asio::awaitable<void> keep_lane(std::shared_ptr<Impl> self, std::shared_ptr<BrokerLink> b) {
    auto& im = *self;
    asio::steady_timer pause(im.ex);
    Clock::duration retry = kLaneRetry;
    while (!b->stopped && !im.stopped) {
      auto ctx = std::make_unique<grpc::ClientContext>();
      ctx->set_wait_for_ready(true);           // a lane waits for its broker
      ctx->set_initial_metadata_corked(true);  // the headers go with the LaneHello
      auto stream = b->stub->PrepareAsyncLane(ctx.get(), im.pump->cq());
      auto endpoint = std::make_shared<tunnel::Endpoint>(
          im.ex, std::make_unique<tunnel::ClientLaneIo>(std::move(ctx), std::move(stream)), im.lane_options, nullptr,
          im.frames_per_message);
      b->lanes.push_back(endpoint);
      // Wake whoever waits for a lane of this broker when it comes up.
      asio::co_spawn(
          im.ex,
          [endpoint, b]() -> asio::awaitable<void> {
            co_await endpoint->lane().changed().wait();
            b->lane_changed->set();
          },
          asio::detached);
      tv1::LaneMessage hello;
      hello.mutable_hello()->set_peer("edge");
      const auto opened = Clock::now();
      if (im.lanes_gauge) im.lanes_gauge->Increment();
      co_await endpoint->run(std::move(hello));
      if (im.lanes_gauge) im.lanes_gauge->Decrement();
      std::erase(b->lanes, endpoint);
      b->lane_changed->set();
      if (b->stopped || im.stopped) break;
      retry = Clock::now() - opened > 2s ? kLaneRetry : std::min<Clock::duration>(retry * 2, 1s);
      pause.expires_after(retry);
      co_await pause.async_wait(use_nothrow);
    }
  }

  // A lane of `b` that is up: at once, or (the last broker of the plan) one
  // that comes up within kWaitForBroker. Null if none.
  asio::awaitable<std::shared_ptr<tunnel::Endpoint>> lane_of(BrokerLink& b, const Patience& p) {
    auto lane = b.usable_lane();
    if (lane || !p.last || b.draining()) co_return lane;
    const auto until = Clock::now() + kWaitForBroker;
    while (!lane && Clock::now() < until && !b.stopped) {
      b.lane_changed->reset();
      co_await b.lane_changed->wait_for(until - Clock::now());
      lane = b.usable_lane();
    }
    co_return lane;
  }

  // ------------------------------------------------------------ resolution

  static std::string address_of(const asio::ip::tcp::endpoint& ep) {
    const std::string a = ep.address().to_string(), port = std::to_string(ep.port());
    return ep.address().is_v6() ? "[" + a + "]:" + port : a + ":" + port;
  }

  std::shared_ptr<BrokerLink> make_link(const std::string& name, const std::string& host,
                                        const asio::ip::tcp::endpoint& ep, const std::string& target) {
    auto l = std::make_shared<BrokerLink>();
    l->name = name;
    const std::string addr = address_of(ep);
    l->target = target;
    l->shown = addr == name ? name : name + " (" + addr + ")";
    grpc::ChannelArguments args = gb::client_channel_args(kBrokerConnectTimeout);
    gb::apply_dmz_link_args(args);
    // The channel dials an address; the certificate names the host.
    if (cfg.has_tls()) args.SetSslTargetNameOverride(cfg.tls().server_name().empty() ? host : cfg.tls().server_name());
    l->channel = grpc::CreateCustomChannel(l->target, creds, args);
    l->stub = tv1::Relay::NewStub(l->channel);
    l->lane_changed = std::make_unique<Event>(ex);
    return l;
  }

  asio::awaitable<void> resolve_once(std::shared_ptr<Impl> self, asio::ip::tcp::resolver& resolver) {
    std::vector<std::shared_ptr<BrokerLink>> next;
    std::set<std::string> seen;
    std::string error;
    for (const auto& name : names) {
      const auto colon = name.rfind(':');
      std::string host = name.substr(0, colon), port = name.substr(colon + 1);
      if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
      auto [ec, results] = co_await resolver.async_resolve(host, port, use_nothrow);
      if (stopped) co_return;
      if (ec) {
        POSTERN_LOG(warn, "cannot resolve broker").kv("broker", name).kv("error", ec.message());
        error = "cannot resolve " + name + ": " + ec.message();
        // DNS failing is no news about the brokers: keep what this name had.
        for (const auto& b : brokers) {
          if (b->name == name && seen.insert(b->target).second) next.push_back(b);
        }
        continue;
      }
      for (const auto& r : results) {
        const std::string target = (r.endpoint().address().is_v6() ? "ipv6:" : "ipv4:") + address_of(r.endpoint());
        if (!seen.insert(target).second) continue;
        auto known_link = std::find_if(brokers.begin(), brokers.end(), [&](const auto& b) { return b->target == target; });
        if (known_link != brokers.end()) {
          next.push_back(*known_link);  // the same channel and lanes
          continue;
        }
        auto l = make_link(name, host, r.endpoint(), target);
        POSTERN_LOG(info, "broker address added").kv("broker", l->shown).kv("target", l->target);
        for (std::size_t i = 0; i < lanes_per_broker; ++i) asio::co_spawn(ex, keep_lane(self, l), asio::detached);
        next.push_back(std::move(l));
      }
    }
    resolve_error = error;
    if (next.empty()) co_return;  // never forget every broker at once
    for (const auto& b : brokers) {
      if (!seen.contains(b->target)) {
        POSTERN_LOG(info, "broker address gone").kv("broker", b->shown);
        b->stop();
      }
    }
    brokers = std::move(next);
    if (known) known->Set(static_cast<double>(brokers.size()));
    resolved->set();
  }

  static asio::awaitable<void> resolve_loop(std::shared_ptr<Impl> self) {
    auto& im = *self;
    asio::ip::tcp::resolver resolver(im.ex);
    while (!im.stopped) {
      co_await im.resolve_once(self, resolver);
      if (im.stopped) break;
      const auto resolved_at = Clock::now();
      im.resolve_now->reset();
      const auto wait = im.brokers.empty() ? Clock::duration(kMinResolveGap) : im.resolve_interval;
      co_await im.resolve_now->wait_for(wait);
      if (im.stopped) break;
      const auto since = Clock::now() - resolved_at;
      if (since < kMinResolveGap) {
        asio::steady_timer gap(im.ex, kMinResolveGap - since);
        co_await gap.async_wait(use_nothrow);
      }
    }
  }

  // ------------------------------------------------------------ one attempt

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
      avoid(b, kAvoidUnreachable);
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
    auto lane = co_await lane_of(b, patience);
    if (!lane) {
      avoid(b, kAvoidUnreachable);
      retry = Retry::unreachable;
      throw ExchangeError(tv1::ERROR_CODE_UPSTREAM_UNREACHABLE,
                          "cannot reach the broker at " + b.shown + ": no connection within " +
                              std::to_string(std::chrono::milliseconds(kWaitForBroker).count()) + " ms");
    }
    // A request without a body crosses as one message: head, credit, end.
    std::string_view chunk;
    bool have_chunk = false, bodyless = false;
    if (head.content_length() == 0) {
      have_chunk = co_await body.next(chunk);
      bodyless = !have_chunk;
    }
    tv1::RequestHead h = head;
    h.set_connector_wait_ms(static_cast<std::uint32_t>(patience.connector_wait.count()));
    auto x = lane->open(h);
    bool got_head = false, timed_out = false, anything = false;
    Deadline head_deadline(ex, budget, [&] {
      if (!got_head) {
        timed_out = true;
        x->abandon(tv1::ERROR_CODE_CLIENT_GONE, "the edge gave up waiting for a response");
      }
    });
    // The body goes up beside the response coming down: a native service
    // may answer before it has read the whole request.
    Event upload_done(ex);
    std::exception_ptr upload_failure;  // the client's body could not be read (malformed, cut)
    std::optional<PeekedBody> peeked;
    if (bodyless) {
      tv1::Frame end;
      *end.mutable_end()->mutable_trailers() = body.trailers();
      x->send(std::move(end));
      upload_done.set();
    } else {
      BodySource* src = &body;
      if (have_chunk) src = &peeked.emplace(body, chunk);
      asio::co_spawn(
          ex, [x, src]() -> asio::awaitable<void> { co_await tunnel::send_body(*x, *src); },
          [&upload_done, &upload_failure, x](std::exception_ptr e) {
            if (e) {
              upload_failure = e;
              x->abandon(tv1::ERROR_CODE_CLIENT_GONE, "the request body could not be read");
            }
            upload_done.set();
          });
    }
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
    co_await upload_done.wait();
    if (retry == Retry::draining) avoid(b, kAvoidDraining);
    // A body that could not be read is the client's fault (a malformed
    // chunk: 400), whatever the exchange said after it was abandoned.
    if (upload_failure && !ended) std::rethrow_exception(upload_failure);
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
  im.cfg = cfg;
  if (!cfg.address().empty()) im.names.push_back(cfg.address());
  for (const auto& a : cfg.addresses()) im.names.push_back(a);
  if (im.names.empty()) throw std::runtime_error("broker.address is required (or broker.addresses)");
  for (std::size_t i = 0; i < im.names.size(); ++i) {
    const auto& n = im.names[i];
    const auto colon = n.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == n.size()) {
      const std::string field =
          !cfg.address().empty() && i == 0
              ? "broker.address"
              : "broker.addresses[" + std::to_string(i - (cfg.address().empty() ? 0 : 1)) + "]";
      throw std::runtime_error(field + ": expected host:port, got '" + n + "'");
    }
    if (!im.names_text.empty()) im.names_text += ", ";
    im.names_text += n;
  }
  grpc::ChannelArguments unused;
  im.creds = gb::client_credentials(cfg.has_tls() ? &cfg.tls() : nullptr, "broker", unused, file_check_interval);
  im.resolve_interval = config::duration_or(cfg.resolve_interval(), 30s);
  im.lanes_per_broker = cfg.lanes() ? cfg.lanes() : 1;
  im.lane_options.receive_window = cfg.receive_window() ? cfg.receive_window() : (4u << 20);
  im.resolved = std::make_unique<Event>(ex);
  im.resolve_now = std::make_unique<Event>(ex);
  im.pump = std::make_unique<gb::Pump>(std::make_unique<grpc::CompletionQueue>(), "cq-relay");
  if (metrics) {
    im.retries = &prometheus::BuildCounter()
                      .Name("postern_edge_broker_retries_total")
                      .Help("Exchanges sent on to another broker, by why the one tried could not take them")
                      .Register(*metrics);
    im.known = &prometheus::BuildGauge()
                    .Name("postern_edge_brokers")
                    .Help("Broker addresses known (every address the broker names resolve to)")
                    .Register(*metrics)
                    .Add({});
    im.lanes_gauge = &prometheus::BuildGauge()
                          .Name("postern_edge_lanes")
                          .Help("Lanes open to brokers (each carries many exchanges)")
                          .Register(*metrics)
                          .Add({});
    im.frames_per_message = &prometheus::BuildHistogram()
                                 .Name("postern_edge_lane_frames_per_message")
                                 .Help("Frames in each lane message written: how many exchanges share a gRPC message")
                                 .Register(*metrics)
                                 .Add({}, prometheus::Histogram::BucketBoundaries{1, 2, 4, 8, 16, 32, 64, 128, 256,
                                                                                 512});
  }
  asio::co_spawn(ex, Impl::resolve_loop(impl_), asio::detached);
}

RelayClient::~RelayClient() {
  impl_->stopped = true;
  impl_->resolve_now->set();
  for (auto& b : impl_->brokers) b->stop();
}

asio::awaitable<void> RelayClient::invoke(const tv1::RequestHead& head, BodySource& body, ResponseSink& sink,
                                          std::chrono::milliseconds head_timeout) {
  auto& im = *impl_;
  if (!im.resolved->is_set()) co_await im.resolved->wait_for(kWaitForBroker);
  const auto plan = im.plan();
  if (plan.empty()) im.throw_unresolved();
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
    im.count_retry(*plan[i], *plan[i + 1], retry, head.request_id());
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
net::WsPort& WsTunnel::port() { return *impl_->port; }

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
  auto lane = co_await lane_of(*b, patience);
  if (!lane) {
    avoid(*b, kAvoidUnreachable);
    retry = Retry::unreachable;
    throw ExchangeError(tv1::ERROR_CODE_UPSTREAM_UNREACHABLE,
                        "cannot reach the broker at " + b->shown + ": no connection within " +
                            std::to_string(std::chrono::milliseconds(kWaitForBroker).count()) + " ms");
  }
  tv1::RequestHead h = head;
  h.set_connector_wait_ms(static_cast<std::uint32_t>(patience.connector_wait.count()));
  auto x = lane->open(h);
  auto t = std::make_unique<WsTunnel::Impl>();
  t->broker = b;
  bool got_head = false, timed_out = false, anything = false;
  std::optional<ExchangeError> failure;
  {
    Deadline head_deadline(ex, budget, [&] {
      if (!got_head) {
        timed_out = true;
        x->abandon(tv1::ERROR_CODE_CLIENT_GONE, "the edge gave up waiting for the upgrade's answer");
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
  if (retry == Retry::draining) avoid(*b, kAvoidDraining);
  if (failure) throw *failure;
  no_answer(*b, *x, head, timed_out, anything, x->may_have_left(), false, head_timeout, retry,
            "no answer to the WebSocket upgrade");
}

asio::awaitable<std::unique_ptr<WsTunnel>> RelayClient::open_websocket(const tv1::RequestHead& head,
                                                                       std::chrono::milliseconds head_timeout,
                                                                       std::size_t max_message_bytes) {
  auto& im = *impl_;
  if (!im.resolved->is_set()) co_await im.resolved->wait_for(kWaitForBroker);
  const auto plan = im.plan();
  if (plan.empty()) im.throw_unresolved();
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
    im.count_retry(*plan[i], *plan[i + 1], retry, head.request_id());
  }
}

// ------------------------------------------------------------ config

asio::awaitable<void> RelayClient::watch_config(std::string client_id, std::function<std::uint64_t()> known,
                                                std::function<void(policy::v1::SignedSnapshot&&)> on_snapshot) {
  auto& im = *impl_;
  im.watcher = std::make_unique<gb::SnapshotWatcher>(im.ex, "broker", im.names_text, std::move(client_id));
  while (!im.resolved->is_set() && !im.watch_stopped) {
    co_await im.resolved->wait_for(1s);
  }
  if (im.watch_stopped) co_return;
  // A stream that ended because its broker went away (draining, gone):
  // the next one goes to another broker.
  im.watcher->on_end = [&im](const grpc::Status& st) {
    if (im.watching && st.error_code() == grpc::StatusCode::UNAVAILABLE) im.avoid(*im.watching, kAvoidDraining);
  };
  co_await im.watcher->run(
      [&im](grpc::ClientContext* ctx, const policy::v1::WatchRequest& req) {
        im.watching = im.plan().front();
        im.watcher->set_address(im.watching->shown);
        return im.watching->stub->PrepareAsyncWatchConfig(ctx, req, im.pump->cq());
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

}  // namespace postern::edge
