#include "edge/relay_client.hpp"

#include <grpcpp/grpcpp.h>

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include <algorithm>
#include <boost/asio/ip/tcp.hpp>
#include <optional>
#include <set>

#include "common/config/yaml_proto.hpp"
#include "common/event.hpp"
#include "common/grpc/bridge.hpp"
#include "common/grpc/channel.hpp"
#include "common/grpc/frame_port.hpp"
#include "common/grpc/frames.hpp"
#include "common/grpc/mux.hpp"
#include "common/grpc/snapshot_watcher.hpp"
#include "postern/tunnel/v1/tunnel.grpc.pb.h"

namespace postern::edge {

namespace tv1 = tunnel::v1;
namespace gb = grpc_bridge;
using FrameStream = grpc::ClientAsyncReaderWriter<tv1::Frame, tv1::Frame>;

// One Relay.Invoke call and what it needs alive.
struct InvokeCall {
  grpc::ClientContext ctx;
  std::unique_ptr<FrameStream> stream;
  grpc::Status status;
  bool wait_for_broker = false;  // waits for its broker's channel to connect
};
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

// Ends a call whatever state it is in (a kept stream gets no status from
// the broker unless it is cancelled); it lives until gRPC lets go of it.
void retire(std::unique_ptr<InvokeCall> call) {
  call->ctx.TryCancel();
  gb::finish_detached(std::move(call));
}

// How long a broker that said it is draining, or could not be reached, is
// tried only after the others.
constexpr auto kAvoidDraining = 2s;
constexpr auto kAvoidUnreachable = 1s;
// A broker without the Sessions method gets WebSocket sessions on Invoke
// streams for this long before the method is tried again.
constexpr auto kNoSessionsFor = 60s;
// A failure asks for the names to be resolved again, at most this often.
constexpr auto kMinResolveGap = 1s;
// When every broker's channel is down, the last one tried is waited for this
// long to connect again: a broker restarting while the other one drains is
// then a short wait, not a 502. Longer than gRPC's longest reconnect backoff
// (1 s, jittered by 20 %), so a broker that is back is reached; short enough
// that no broker at all still fails fast.
constexpr auto kWaitForBroker = 1500ms;
// One connect attempt to a broker may take this long. Edges and brokers
// share the DMZ, so a connect takes milliseconds; a broker that accepts and
// then says nothing is given up on (and ranked last) after this, rather
// than after gRPC's 20 s, and a request or the config watch that went to it
// first moves on to the next.
constexpr auto kBrokerConnectTimeout = 2000ms;
// The last broker that can be reached may hold a request this long for a
// connector to attach, when it has none for the alias but expects one (it
// restarted, or the alias' connectors did; see
// RequestHead.connector_wait_ms). A connector's attach backoff is at most
// 1 s, jittered by 20 %.
constexpr auto kWaitForConnector = 2000ms;

// How long one attempt may wait. Attempts with a better broker left to try
// fail fast instead, so that the next one is tried.
struct Patience {
  // The last broker of the plan: a new call waits up to kWaitForBroker for
  // its channel if that is not connected when the call is made.
  bool last = false;
  // How long the broker may hold the exchange for a connector to attach
  // (RequestHead.connector_wait_ms): on the last broker that can be
  // reached, within what is left of the exchange's time.
  std::chrono::milliseconds connector_wait{0};
};

// A call waiting for its broker's channel (wait_for_ready) is cancelled if
// its request head has not left within kWaitForBroker; expired() then says
// why it ended, and throw_not_connected() tells the client.
class ConnectWait {
 public:
  ConnectWait(asio::any_io_executor ex, grpc::ClientContext& ctx, bool armed) {
    if (armed) {
      deadline_.emplace(ex, kWaitForBroker, [this, &ctx] {
        expired_ = true;
        ctx.TryCancel();
      });
    }
  }
  ConnectWait(const ConnectWait&) = delete;
  ConnectWait& operator=(const ConnectWait&) = delete;
  /// The request head has been written (or the call failed): no more wait.
  void over() { deadline_.reset(); }
  bool expired() const { return expired_; }

 private:
  bool expired_ = false;
  std::optional<Deadline> deadline_;
};

[[noreturn]] void throw_not_connected(const std::string& broker) {
  throw ExchangeError(tv1::ERROR_CODE_UPSTREAM_UNREACHABLE,
                      "cannot reach the broker at " + broker + ": no connection within " +
                          std::to_string(std::chrono::milliseconds(kWaitForBroker).count()) + " ms");
}

// An exchange that ended before the far side answered: a timeout, a broker
// that cannot be reached, or a stream that ended under us.
[[noreturn]] void throw_no_answer(bool timed_out, bool anything_received, const grpc::Status& st,
                                  std::chrono::milliseconds head_timeout, const std::string& broker,
                                  const std::string& what) {
  if (timed_out) {
    throw ExchangeError(tv1::ERROR_CODE_UPSTREAM_TIMEOUT,
                        what + " within " + std::to_string(head_timeout.count()) + " ms");
  }
  if (!anything_received && st.error_code() == grpc::StatusCode::UNAVAILABLE) {
    throw ExchangeError(tv1::ERROR_CODE_UPSTREAM_UNREACHABLE,
                        "cannot reach the broker at " + broker + ": " + st.error_message());
  }
  throw ExchangeError(tv1::ERROR_CODE_CONNECTOR_LOST, "the exchange ended with " + what + " (" +
                                                          std::to_string(static_cast<int>(st.error_code())) + " " +
                                                          st.error_message() + ")");
}

// RFC 9110 9.2.2: a request the broker may already have passed on can be
// sent again only if sending it twice means the same as sending it once.
bool idempotent(std::string_view method) {
  return method == "GET" || method == "HEAD" || method == "OPTIONS" || method == "TRACE" || method == "PUT" ||
         method == "DELETE";
}

// Invoke streams kept per broker for the next exchange: enough for a burst
// of this many at once; and for how long one is kept unused.
constexpr std::size_t kMaxKeptStreams = 256;
constexpr auto kKeptStreamLife = 30s;

// A call that ended with nothing received because of the broker, not us
// (this side cancels only on a timeout or its own failure, both handled
// first): it could not be reached, or it ended the call unanswered, as a
// gRPC server that shuts down does with calls it has not started.
bool broker_went_away(const grpc::Status& st) {
  return st.error_code() == grpc::StatusCode::UNAVAILABLE || st.error_code() == grpc::StatusCode::CANCELLED;
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

}  // namespace

// One broker address: its channel and how it fared lately.
struct BrokerLink {
  std::string name;    // host:port as configured
  std::string target;  // ipv4:a.b.c.d:port (what the channel dials)
  std::string shown;   // for messages: the name, and the address if it differs
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<tv1::Relay::Stub> stub;
  Clock::time_point avoid_until{};
  // Invoke streams that carried a clean exchange, open for the next one,
  // with when each came back: oldest first, taken newest first.
  std::vector<std::pair<std::unique_ptr<InvokeCall>, Clock::time_point>> kept;
  prometheus::Gauge* kept_gauge = nullptr;  // summed over every broker
  // The Sessions stream that carries this edge's WebSocket sessions to the
  // broker; a new one replaces it once it has ended.
  std::shared_ptr<gb::Mux> mux;
  // The broker had no Sessions method (an older one): until then, sessions
  // go on Invoke. Then the method is tried again: a broker upgraded at the
  // same address carries them.
  Clock::time_point no_sessions_until{};

  ~BrokerLink() {
    retire_kept(Clock::time_point::max());
    if (mux) mux->close();
  }

  std::unique_ptr<InvokeCall> take_kept() {
    if (kept.empty()) return nullptr;
    auto call = std::move(kept.back().first);
    kept.pop_back();
    count_kept(-1);
    return call;
  }
  void keep(std::unique_ptr<InvokeCall> call) {
    kept.emplace_back(std::move(call), Clock::now());
    count_kept(1);
    if (kept.size() > kMaxKeptStreams) {
      retire(std::move(kept.front().first));
      kept.erase(kept.begin());
      count_kept(-1);
    }
  }
  // Retires the streams kept since before `before` (all: max()).
  void retire_kept(Clock::time_point before) {
    std::size_t n = 0;
    while (n < kept.size() && kept[n].second < before) retire(std::move(kept[n++].first));
    kept.erase(kept.begin(), kept.begin() + static_cast<std::ptrdiff_t>(n));
    count_kept(-static_cast<double>(n));
  }
  void count_kept(double d) {
    if (kept_gauge && d != 0) kept_gauge->Increment(d);
  }
};

struct RelayClient::Impl {
  asio::any_io_executor ex;
  config::v1::RelayClient cfg;
  std::vector<std::string> names;  // address, then addresses
  std::string names_text;          // for logs
  std::shared_ptr<grpc::ChannelCredentials> creds;
  std::unique_ptr<gb::Pump> pump;
  std::vector<std::shared_ptr<BrokerLink>> brokers;  // every resolved address, in resolution order
  std::size_t cursor = 0;                            // round-robin position
  Clock::duration resolve_interval{};
  std::unique_ptr<Event> resolved;     // set once any address is known
  std::unique_ptr<Event> resolve_now;  // a failure asks for a resolution
  std::string resolve_error;           // why nothing is known yet
  bool stopped = false;
  bool watch_stopped = false;
  std::unique_ptr<gb::SnapshotWatcher> watcher;
  std::shared_ptr<BrokerLink> watching;
  prometheus::Family<prometheus::Counter>* retries = nullptr;
  prometheus::Gauge* known = nullptr;
  prometheus::Gauge* kept_streams = nullptr;

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
    l->kept_gauge = kept_streams;
    l->channel->GetState(true);  // connect now, not on the first request
    return l;
  }

  // Every broker once, starting one further round the ring each call: the
  // healthy first, then those that failed lately or are still connecting,
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
      const auto st = b.channel->GetState(false);
      rank[i] = down(st) ? 2 : st == GRPC_CHANNEL_CONNECTING || now < b.avoid_until ? 1 : 0;
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

  static bool down(grpc_connectivity_state st) {
    return st == GRPC_CHANNEL_TRANSIENT_FAILURE || st == GRPC_CHANNEL_SHUTDOWN;
  }

  // How attempt `i` of `plan`, with `budget` left, may wait. The last
  // broker waits for its channel if that is not connected, since a moment's
  // wait beats failing at once. The last one that can be reached (every
  // broker after it is down) may hold the exchange for a connector.
  static Patience patience(const std::vector<std::shared_ptr<BrokerLink>>& plan, std::size_t i,
                           std::chrono::milliseconds budget) {
    bool rest_down = true;
    for (std::size_t j = i + 1; j < plan.size(); ++j) rest_down = rest_down && down(plan[j]->channel->GetState(false));
    return {.last = i + 1 == plan.size(),
            .connector_wait = rest_down ? std::min<std::chrono::milliseconds>(kWaitForConnector, budget)
                                        : std::chrono::milliseconds(0)};
  }

  // Whether a new call on `b` waits for its channel (wait_for_ready): the
  // last broker, not connected at the moment the call is made. Not only in
  // TRANSIENT_FAILURE: right after its broker went away a channel is IDLE,
  // then CONNECTING, and a call that does not wait fails as soon as that
  // first connect is refused.
  static bool wait_for_channel(const BrokerLink& b, const Patience& p) {
    return p.last && b.channel->GetState(false) != GRPC_CHANNEL_READY;
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

  // ------------------------------------------------------------ resolution

  asio::awaitable<void> resolve_once(asio::ip::tcp::resolver& resolver) {
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
        auto l = make_or_keep(name, host, r.endpoint(), seen);
        if (l) next.push_back(std::move(l));
      }
    }
    resolve_error = error;
    if (next.empty()) co_return;  // never forget every broker at once
    for (const auto& b : brokers) {
      if (!seen.contains(b->target)) POSTERN_LOG(info, "broker address gone").kv("broker", b->shown);
    }
    for (const auto& b : next) {
      const bool had = std::any_of(brokers.begin(), brokers.end(), [&](const auto& o) { return o == b; });
      if (!had) POSTERN_LOG(info, "broker address added").kv("broker", b->shown).kv("target", b->target);
    }
    brokers = std::move(next);
    if (known) known->Set(static_cast<double>(brokers.size()));
    resolved->set();
  }

  std::shared_ptr<BrokerLink> make_or_keep(const std::string& name, const std::string& host,
                                           const asio::ip::tcp::endpoint& ep, std::set<std::string>& seen) {
    const std::string target = (ep.address().is_v6() ? "ipv6:" : "ipv4:") + address_of(ep);
    if (!seen.insert(target).second) return nullptr;
    for (const auto& b : brokers) {
      if (b->target == target) return b;  // the same channel, so its connection stays
    }
    return make_link(name, host, ep, target);
  }

  static asio::awaitable<void> resolve_loop(std::shared_ptr<Impl> self) {
    auto& im = *self;
    asio::ip::tcp::resolver resolver(im.ex);
    while (!im.stopped) {
      co_await im.resolve_once(resolver);
      if (im.stopped) break;
      const auto resolved_at = Clock::now();
      im.resolve_now->reset();
      const auto wait = im.brokers.empty() ? Clock::duration(kMinResolveGap) : im.resolve_interval;
      co_await im.resolve_now->wait_for(wait);
      if (im.stopped) break;
      for (const auto& b : im.brokers) b->retire_kept(Clock::now() - kKeptStreamLife);
      const auto since = Clock::now() - resolved_at;
      if (since < kMinResolveGap) {
        asio::steady_timer gap(im.ex, kMinResolveGap - since);
        co_await gap.async_wait(use_nothrow);
      }
    }
  }

  // ------------------------------------------------------------ one attempt

  // One exchange on one broker. Throws ExchangeError as invoke() does; sets
  // `retry` when the broker refused it before passing it on, or was not
  // reached, so that another broker may have it. A stream kept from an
  // earlier exchange is used first; one the broker had let go meanwhile (it
  // drained, or the connection went) gets the exchange again on a new call.
  // A new call may wait for the broker's channel (wait_for_channel).
  asio::awaitable<void> invoke_on(BrokerLink& b, const tv1::RequestHead& head, OnceBody& body, ResponseSink& sink,
                                  std::chrono::milliseconds budget, std::chrono::milliseconds head_timeout,
                                  Retry& retry, Patience patience) {
    for (;;) {
      auto call = b.take_kept();
      const bool kept = call != nullptr;
      if (!kept) {
        call = std::make_unique<InvokeCall>();
        // Decided as the call is made: a kept stream that was dead tells
        // of a broker gone since the plan was made.
        call->wait_for_broker = wait_for_channel(b, patience);
        call->ctx.set_wait_for_ready(call->wait_for_broker);
        // The call's headers leave with the request head, not on their own.
        call->ctx.set_initial_metadata_corked(true);
        call->stream = b.stub->PrepareAsyncInvoke(&call->ctx, pump->cq());
        gb::start_detached(*call->stream);
      }
      const bool not_taken = co_await invoke_call(b, std::move(call), kept, head, body, sink, budget, head_timeout,
                                                  patience.connector_wait, retry);
      if (!not_taken) co_return;
      // The others it kept went the same way, most likely.
      b.retire_kept(Clock::time_point::max());
    }
  }

  // One exchange on one call. Returns true, having done nothing visible,
  // when `kept` (the call carried an earlier exchange) and the broker had
  // let the stream go before it took this request: the head could not be
  // sent, or the call ended with OK and nothing answered.
  asio::awaitable<bool> invoke_call(BrokerLink& b, std::unique_ptr<InvokeCall> call, bool kept,
                                    const tv1::RequestHead& head, OnceBody& body, ResponseSink& sink,
                                    std::chrono::milliseconds budget, std::chrono::milliseconds head_timeout,
                                    std::chrono::milliseconds connector_wait, Retry& retry) {
    grpc::ClientContext& ctx = call->ctx;
    FrameStream* stream = call->stream.get();
    bool got_head = false;
    bool timed_out = false;
    Deadline head_deadline(ex, budget, [&] {
      if (!got_head) {
        timed_out = true;
        ctx.TryCancel();
      }
    });
    std::exception_ptr failure;
    bool anything_received = false;
    bool head_sent = false;
    bool request_sent = false;  // up to its end
    bool ended = false;
    ConnectWait connect_wait(ex, ctx, call->wait_for_broker);
    try {
      // A request without a body crosses as one message: head and end. The
      // stream is never half-closed: it may carry the next exchange.
      bool bodyless = false;
      std::string_view chunk;
      bool have_chunk = false;
      if (head.content_length() == 0) {
        have_chunk = co_await body.next(chunk);
        bodyless = !have_chunk;
      }
      tv1::Frame f;
      *f.mutable_request_head() = head;
      f.mutable_request_head()->set_connector_wait_ms(static_cast<std::uint32_t>(connector_wait.count()));
      if (bodyless) *f.add_then()->mutable_end()->mutable_trailers() = body.trailers();
      bool ok = co_await gb::write(*stream, f);
      head_sent = ok;
      connect_wait.over();
      request_sent = ok && bodyless;
      // Upload the body; a failed write means the broker ended the stream
      // (an early answer or an error): stop and read what it said.
      if (ok && !bodyless) {
        for (;;) {
          const bool more = have_chunk || co_await body.next(chunk);
          have_chunk = false;
          if (!more) break;
          f.mutable_body()->mutable_data()->assign(chunk.data(), chunk.size());
          const bool sent = co_await gb::write(*stream, f);
          ok = sent;
          if (!ok) break;
        }
        if (ok) {
          *f.mutable_end()->mutable_trailers() = body.trailers();
          request_sent = co_await gb::write(*stream, f);
        }
      }
      gb::FrameReader reader;
      for (;;) {
        const bool got = co_await reader.read(*stream, f);
        if (!got) break;
        const bool first = !anything_received;
        anything_received = true;
        // The sink writes a body only after a head, and one head: frames out
        // of that order (the broker checks them too) end the exchange.
        if (f.has_error()) {
          if (first) retry = refusal(f.error().code());
          throw ExchangeError(f.error().code(), f.error().message());
        }
        if (f.has_response_head() == got_head) {
          throw ExchangeError(tv1::ERROR_CODE_UPSTREAM_PROTOCOL,
                              got_head ? "the broker sent a second response head"
                                       : "the broker sent a response frame before the response head");
        }
        if (f.has_response_head()) {
          got_head = true;
          head_deadline.disarm();
          co_await sink.head(*f.mutable_response_head());
          if (!reader.buffered()) co_await sink.idle();
        } else if (f.has_body()) {
          co_await sink.body(f.body().data());
        } else if (f.has_end()) {
          co_await sink.end(f.end().trailers());
          ended = true;
          break;
        }
      }
    } catch (...) {
      failure = std::current_exception();
    }
    if (ended && !failure) {
      // Clean both ways: the broker keeps the stream open for the next
      // exchange (unless it drains; then the next one finds out).
      if (request_sent && !timed_out) {
        b.keep(std::move(call));
      } else {
        retire(std::move(call));
      }
      co_return false;
    }
    if (failure) ctx.TryCancel();
    grpc::Status& st = call->status;
    co_await gb::op([&](void* tag) { stream->Finish(&st, tag); });
    if (kept && !failure && !timed_out && !anything_received && (!head_sent || st.ok())) {
      if (!body.consumed()) co_return true;
      // Too late to send it again: some of the body is gone with the stream.
      avoid(b, kAvoidDraining);
      throw ExchangeError(tv1::ERROR_CODE_DRAINING,
                          "the broker at " + b.shown + " stopped taking requests (draining) as this one was sent");
    }
    if (retry == Retry::draining) avoid(b, kAvoidDraining);
    if (failure) std::rethrow_exception(failure);
    if (connect_wait.expired()) throw_not_connected(b.shown);
    if (!sink.started() || !got_head) {
      if (!timed_out && !anything_received && broker_went_away(st)) {
        avoid(b, kAvoidUnreachable);
        if (!head_sent || idempotent(head.method())) retry = Retry::unreachable;
      }
      throw_no_answer(timed_out, anything_received, st, head_timeout, b.shown, "no response");
    }
    throw ExchangeError(tv1::ERROR_CODE_CONNECTOR_LOST, "the response was cut off mid-body");
  }

  asio::awaitable<std::unique_ptr<WsTunnel>> open_on(const std::shared_ptr<BrokerLink>& b,
                                                     const tv1::RequestHead& head, std::chrono::milliseconds budget,
                                                     std::chrono::milliseconds head_timeout,
                                                     std::size_t max_message_bytes, Retry& retry,
                                                     Patience patience);
  asio::awaitable<std::unique_ptr<WsTunnel>> open_shared(const std::shared_ptr<BrokerLink>& b,
                                                         const tv1::RequestHead& head,
                                                         std::chrono::milliseconds budget,
                                                         std::chrono::milliseconds head_timeout,
                                                         std::size_t max_message_bytes, Retry& retry,
                                                         Patience patience);
  std::shared_ptr<gb::Mux> mux_for(BrokerLink& b, bool wait);
};

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
    im.kept_streams = &prometheus::BuildGauge()
                           .Name("postern_edge_broker_streams_kept")
                           .Help("Invoke streams to brokers kept open for the next exchange")
                           .Register(*metrics)
                           .Add({});
  }
  asio::co_spawn(ex, Impl::resolve_loop(impl_), asio::detached);
}

RelayClient::~RelayClient() {
  impl_->stopped = true;
  impl_->resolve_now->set();
}

asio::awaitable<void> RelayClient::invoke(const tv1::RequestHead& head, BodySource& body, ResponseSink& sink,
                                          std::chrono::milliseconds head_timeout) {
  auto& im = *impl_;
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
      co_await im.invoke_on(*plan[i], head, once, sink, budget, head_timeout, retry,
                            Impl::patience(plan, i, budget));
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

// A session on the broker's Sessions stream; or, where no connector for
// the alias carries shared sessions, on an Invoke stream of its own.
struct WsTunnel::Impl {
  asio::any_io_executor ex;
  std::shared_ptr<void> broker;  // its channel outlives the call
  std::shared_ptr<gb::MuxSession> session;
  std::unique_ptr<grpc::ClientContext> ctx;  // Invoke only, as are the two below
  std::unique_ptr<FrameStream> stream;
  std::unique_ptr<gb::FramePort> port;
  tv1::ResponseHead head;
  std::string body;
  bool finished = false;
};

WsTunnel::WsTunnel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
WsTunnel::~WsTunnel() {
  // close() was not awaited (an exception on the way): cancel so that gRPC
  // lets go of the call; the tags complete into a queue that outlives us.
  // A shared session ends (error frame) as it is destroyed.
  if (!impl_->finished && impl_->ctx) impl_->ctx->TryCancel();
}
const tv1::ResponseHead& WsTunnel::head() const { return impl_->head; }
const std::string& WsTunnel::body() const { return impl_->body; }
net::WsPort& WsTunnel::port() {
  if (impl_->session) return *impl_->session;
  return *impl_->port;
}

asio::awaitable<void> WsTunnel::close() {
  auto& im = *impl_;
  if (im.finished) co_return;
  if (im.session) {
    co_await im.session->drain(std::chrono::seconds(2));
    im.session.reset();
    im.finished = true;
    co_return;
  }
  co_await im.port->drain(std::chrono::seconds(2));
  grpc::Status st;
  co_await gb::op([&](void* tag) { im.stream->Finish(&st, tag); });
  im.finished = true;
}

std::shared_ptr<gb::Mux> RelayClient::Impl::mux_for(BrokerLink& b, bool wait) {
  if (b.mux && b.mux->usable()) return b.mux;
  auto ctx = std::make_unique<grpc::ClientContext>();
  // As a new Invoke call: only the last broker tried waits for its channel,
  // and then at most kWaitForBroker.
  ctx->set_wait_for_ready(wait);
  auto stream = b.stub->PrepareAsyncSessions(ctx.get(), pump->cq());
  b.mux = std::make_shared<gb::Mux>(ex, std::move(ctx), std::move(stream));
  b.mux->start();
  if (wait) {
    asio::co_spawn(
        ex,
        [m = b.mux]() -> asio::awaitable<void> {
          const bool started = co_await m->started().wait_for(kWaitForBroker);
          if (!started) m->close();
        },
        asio::detached);
  }
  return b.mux;
}

asio::awaitable<std::unique_ptr<WsTunnel>> RelayClient::Impl::open_shared(const std::shared_ptr<BrokerLink>& b,
                                                                          const tv1::RequestHead& head,
                                                                          std::chrono::milliseconds budget,
                                                                          std::chrono::milliseconds head_timeout,
                                                                          std::size_t max_message_bytes,
                                                                          Retry& retry, Patience patience) {
  if (Clock::now() < b->no_sessions_until) co_return co_await open_on(b, head, budget, head_timeout, max_message_bytes, retry, patience);
  auto mux = mux_for(*b, wait_for_channel(*b, patience));
  const bool was_started = mux->started().is_set();
  tv1::RequestHead h = head;
  h.set_connector_wait_ms(static_cast<std::uint32_t>(patience.connector_wait.count()));
  auto t = std::make_unique<WsTunnel::Impl>();
  t->ex = ex;
  t->broker = b;
  t->session = mux->open(h, max_message_bytes);
  auto& s = *t->session;
  bool got_head = false, timed_out = false, anything = false;
  std::optional<ExchangeError> failure;
  {
    Deadline head_deadline(ex, budget, [&] {
      if (!got_head) {
        timed_out = true;
        s.abort();
      }
    });
    tv1::Frame f;
    for (;;) {
      const bool got = co_await s.next(f);
      if (!got || timed_out) break;
      const bool first = !anything;
      anything = true;
      if (f.has_response_head()) {
        got_head = true;
        head_deadline.disarm();
        t->head = std::move(*f.mutable_response_head());
        if (t->head.status() == 101) {
          s.set_send_credit(t->head.request_credit());
          co_return std::make_unique<WsTunnel>(std::move(t));
        }
      } else if (f.has_body()) {
        if (t->body.size() < kMaxRefusalBodyBytes) t->body.append(f.body().data());
      } else if (f.has_end()) {
        t->finished = true;
        co_return std::make_unique<WsTunnel>(std::move(t));  // a refusal
      } else if (f.has_error()) {
        if (first && f.error().code() == tv1::ERROR_CODE_SESSIONS_UNSUPPORTED) {
          t.reset();
          co_return co_await open_on(b, head, budget, head_timeout, max_message_bytes, retry, patience);
        }
        if (first) retry = refusal(f.error().code());
        failure.emplace(f.error().code(), f.error().message());
        break;
      }
    }
  }
  t.reset();
  if (retry == Retry::draining) avoid(*b, kAvoidDraining);
  if (failure) throw *failure;
  if (!timed_out && !anything) {
    // The stream ended under the session: the broker could not be reached,
    // or went. Nothing was answered, and an upgrade may be sent again.
    co_await mux->ended().wait_for(std::chrono::seconds(1));
    if (mux->status().error_code() == grpc::StatusCode::UNIMPLEMENTED) {
      b->no_sessions_until = Clock::now() + kNoSessionsFor;
      co_return co_await open_on(b, head, budget, head_timeout, max_message_bytes, retry, patience);
    }
    avoid(*b, kAvoidUnreachable);
    // A stream that waited for its broker's channel and gave up (mux_for).
    if (!was_started && !mux->started_ok() && mux->status().error_code() == grpc::StatusCode::CANCELLED) {
      retry = Retry::unreachable;
      throw_not_connected(b->shown);
    }
    retry = Retry::unreachable;
    throw ExchangeError(tv1::ERROR_CODE_UPSTREAM_UNREACHABLE,
                        "cannot reach the broker at " + b->shown + ": " +
                            (mux->ended().is_set() ? mux->status().error_message() : std::string("stream ended")));
  }
  throw_no_answer(timed_out, anything, grpc::Status::OK, head_timeout, b->shown, "no answer to the WebSocket upgrade");
}

asio::awaitable<std::unique_ptr<WsTunnel>> RelayClient::Impl::open_on(const std::shared_ptr<BrokerLink>& b,
                                                                      const tv1::RequestHead& head,
                                                                      std::chrono::milliseconds budget,
                                                                      std::chrono::milliseconds head_timeout,
                                                                      std::size_t max_message_bytes, Retry& retry,
                                                                      Patience patience) {
  auto t = std::make_unique<WsTunnel::Impl>();
  t->ex = ex;
  t->broker = b;
  const bool wait_for_broker = wait_for_channel(*b, patience);
  t->ctx = std::make_unique<grpc::ClientContext>();
  t->ctx->set_wait_for_ready(wait_for_broker);
  t->stream = b->stub->PrepareAsyncInvoke(t->ctx.get(), pump->cq());
  t->port = std::make_unique<gb::FramePort>(ex, *t->stream, *t->ctx, max_message_bytes);
  auto tunnel = std::make_unique<WsTunnel>(std::move(t));
  auto& w = *tunnel->impl_;
  bool got_head = false, timed_out = false, anything = false, head_sent = false;
  std::optional<ExchangeError> failure;
  ConnectWait connect_wait(ex, *w.ctx, wait_for_broker);
  {
    Deadline head_deadline(ex, budget, [&] {
      if (!got_head) {
        timed_out = true;
        w.ctx->TryCancel();
      }
    });
    bool ok = co_await gb::op([&](void* tag) { w.stream->StartCall(tag); });
    if (ok) {
      tv1::Frame f;
      *f.mutable_request_head() = head;
      f.mutable_request_head()->set_connector_wait_ms(static_cast<std::uint32_t>(patience.connector_wait.count()));
      ok = co_await gb::write(*w.stream, f);
      head_sent = ok;
    }
    connect_wait.over();
    tv1::Frame f;
    bool ended = false;
    // A refusal may come coalesced (head, body, end); a 101 comes alone,
    // and the session's frames are the FramePort's.
    gb::FrameReader reader;
    while (ok) {
      ok = co_await reader.read(*w.stream, f);
      if (!ok) break;
      const bool first = !anything;
      anything = true;
      if (f.has_response_head()) {
        got_head = true;
        head_deadline.disarm();
        w.head = std::move(*f.mutable_response_head());
        if (w.head.status() == 101) co_return tunnel;
      } else if (f.has_body()) {
        if (w.body.size() < kMaxRefusalBodyBytes) w.body.append(f.body().data());
      } else if (f.has_end()) {
        ended = true;
        break;
      } else if (f.has_error()) {
        if (first) retry = refusal(f.error().code());
        failure.emplace(f.error().code(), f.error().message());
        break;
      }
    }
    if (got_head && ended) {
      // A refusal: our side of the stream ends too, then the call.
      f.Clear();
      f.mutable_end();
      const bool sent = co_await gb::write(*w.stream, f);
      if (sent) co_await gb::op([&](void* tag) { w.stream->WritesDone(tag); });
      co_await tunnel->close();
      co_return tunnel;
    }
  }
  w.ctx->TryCancel();
  grpc::Status st;
  co_await gb::op([&](void* tag) { w.stream->Finish(&st, tag); });
  w.finished = true;
  if (retry == Retry::draining) avoid(*b, kAvoidDraining);
  if (failure) throw *failure;
  if (connect_wait.expired()) throw_not_connected(b->shown);
  if (!timed_out && !anything && broker_went_away(st)) {
    avoid(*b, kAvoidUnreachable);
    if (!head_sent || idempotent(head.method())) retry = Retry::unreachable;
  }
  throw_no_answer(timed_out, anything, st, head_timeout, b->shown, "no answer to the WebSocket upgrade");
}

asio::awaitable<std::unique_ptr<WsTunnel>> RelayClient::open_websocket(const tv1::RequestHead& head,
                                                                       std::chrono::milliseconds head_timeout,
                                                                       std::size_t max_message_bytes) {
  auto& im = *impl_;
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
      tunnel = co_await im.open_shared(plan[i], head, budget, head_timeout, max_message_bytes, retry,
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
