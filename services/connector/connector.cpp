#include "connector/connector.hpp"

#include <grpcpp/grpcpp.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <algorithm>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <map>
#include <optional>
#include <random>
#include <set>

#include "common/config/yaml_proto.hpp"
#include "common/event.hpp"
#include "common/grpc/bridge.hpp"
#include "common/grpc/channel.hpp"
#include "common/grpc/frame_port.hpp"
#include "common/grpc/frames.hpp"
#include "common/grpc/mux.hpp"
#include "common/grpc/send_credit.hpp"
#include "common/grpc/snapshot_watcher.hpp"
#include "common/net/http_client.hpp"
#include "common/net/http_headers.hpp"
#include "common/file_watch.hpp"
#include "common/net/request_target.hpp"
#include "common/net/trailers.hpp"
#include "common/policy/basic_verifier.hpp"
#include "common/policy/catalog.hpp"
#include "common/policy/signed_snapshot.hpp"
#include "common/policy/decision_metrics.hpp"
#include "common/policy/engine.hpp"
#include "common/policy/invocation.hpp"
#include "common/policy/ws_policies.hpp"
#include "common/net/tls.hpp"
#include "common/observability/log.hpp"
#include "postern/policy/v1/policy.grpc.pb.h"
#include "postern/tunnel/v1/tunnel.grpc.pb.h"

namespace postern::connector {

namespace tv1 = tunnel::v1;
namespace pv1 = policy::v1;
namespace gb = grpc_bridge;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using FrameStream = grpc::ClientAsyncReaderWriter<tv1::Frame, tv1::Frame>;
using AttachStream = grpc::ClientAsyncReaderWriter<tv1::ConnectorMessage, tv1::BrokerMessage>;

namespace {

struct Metrics {
  prometheus::Gauge& brokers_attached;
  prometheus::Gauge& parked;
  prometheus::Gauge& in_flight;
  prometheus::Counter& reconnects;
  prometheus::Counter& refusals;
  prometheus::Family<prometheus::Counter>& requests;
  prometheus::Family<prometheus::Histogram>& duration;
  prometheus::Counter& bytes_in;
  prometheus::Counter& bytes_out;
  prometheus::Counter& credit_wait;
  prometheus::Gauge& config_version;
  prometheus::Family<prometheus::Counter>& config_updates;
  prometheus::Gauge& ws_sessions;
  prometheus::Family<prometheus::Counter>& ws_messages;
  prometheus::Family<prometheus::Counter>& ws_bytes;

  explicit Metrics(prometheus::Registry& r)
      : brokers_attached(prometheus::BuildGauge()
                             .Name("postern_connector_brokers_attached")
                             .Help("Brokers this connector is attached to")
                             .Register(r)
                             .Add({})),
        parked(prometheus::BuildGauge()
                   .Name("postern_connector_parked_streams")
                   .Help("Pull streams parked at brokers")
                   .Register(r)
                   .Add({})),
        in_flight(prometheus::BuildGauge()
                      .Name("postern_connector_exchanges_in_flight")
                      .Help("Exchanges being served right now")
                      .Register(r)
                      .Add({})),
        reconnects(prometheus::BuildCounter()
                       .Name("postern_connector_reconnects_total")
                       .Help("Attach attempts after the first, per broker link")
                       .Register(r)
                       .Add({})),
        refusals(prometheus::BuildCounter()
                     .Name("postern_connector_registration_refusals_total")
                     .Help("Attach attempts the broker refused")
                     .Register(r)
                     .Add({})),
        requests(prometheus::BuildCounter()
                     .Name("postern_connector_requests_total")
                     .Help("Exchanges served, by alias and status class")
                     .Register(r)),
        duration(prometheus::BuildHistogram()
                     .Name("postern_connector_native_duration_seconds")
                     .Help("Time from request head to end of the native response (of a WebSocket session: to its close)")
                     .Register(r)),
        bytes_in(prometheus::BuildCounter()
                     .Name("postern_connector_request_bytes_total")
                     .Help("Request body bytes sent to native services")
                     .Register(r)
                     .Add({})),
        bytes_out(prometheus::BuildCounter()
                      .Name("postern_connector_response_bytes_total")
                      .Help("Response body bytes received from native services")
                      .Register(r)
                      .Add({})),
        credit_wait(prometheus::BuildCounter()
                        .Name("postern_connector_credit_wait_seconds_total")
                        .Help("Time responses waited for the broker's credit: clients reading slower than the "
                              "native service sends")
                        .Register(r)
                        .Add({})),
        config_version(prometheus::BuildGauge()
                           .Name("postern_connector_config_version")
                           .Help("Version of the policy snapshot in force (0: none)")
                           .Register(r)
                           .Add({})),
        config_updates(prometheus::BuildCounter()
                           .Name("postern_connector_config_updates_total")
                           .Help("Policy snapshots received from the policy service, by result: applied, unchanged, "
                                 "untrusted (no valid signature by a trusted key), invalid")
                           .Register(r)),
        ws_sessions(prometheus::BuildGauge()
                        .Name("postern_connector_websocket_sessions")
                        .Help("WebSocket sessions open to native services right now")
                        .Register(r)
                        .Add({})),
        ws_messages(prometheus::BuildCounter()
                        .Name("postern_connector_websocket_messages_total")
                        .Help("WebSocket messages relayed, by alias and direction")
                        .Register(r)),
        ws_bytes(prometheus::BuildCounter()
                     .Name("postern_connector_websocket_bytes_total")
                     .Help("WebSocket message bytes passed on (into the tunnel, or to the native service), by alias "
                           "and direction")
                     .Register(r)) {}
};

const prometheus::Histogram::BucketBoundaries kLatencyBuckets{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                              0.25,  0.5,    1,     2.5,  5,     10,   30, 60};

// The request body as frames arriving on a Pull stream.
class PullBody final : public BodySource {
 public:
  PullBody(FrameStream& s, gb::FrameReader& r, Metrics& m) : stream_(s), reader_(r), metrics_(m) {}
  asio::awaitable<bool> next(std::string_view& chunk) override {
    if (ended_) co_return false;
    for (;;) {
      const bool ok = co_await reader_.read(stream_, frame_);
      if (!ok) throw ExchangeError(tv1::ERROR_CODE_CLIENT_GONE, "broker stream ended before the request body did");
      if (frame_.has_body()) {
        chunk = frame_.body().data();
        metrics_.bytes_in.Increment(static_cast<double>(chunk.size()));
        co_return true;
      }
      if (frame_.has_end()) {
        ended_ = true;
        end_seen_ = true;
        trailers_ = frame_.end().trailers();
        // Whatever the edge did, no forbidden or unwritable trailer reaches
        // a native service.
        net::drop_forbidden_trailers(trailers_);
        for (int i = trailers_.size() - 1; i >= 0; --i) {
          const auto& t = trailers_.Get(i);
          if (!net::is_token(t.name()) || !net::is_safe_field_value(t.value())) trailers_.DeleteSubrange(i, 1);
        }
        co_return false;
      }
      if (frame_.has_error()) {
        throw ExchangeError(frame_.error().code(), "request aborted upstream: " + frame_.error().message());
      }
    }
  }
  bool ended() const { return ended_; }
  /// True once the request's End frame arrived (not an error, not a cut).
  bool end_seen() const { return end_seen_; }
  /// True when the rest of the request is here already: drain() needs no I/O.
  bool rest_buffered() const { return ended_ || reader_.buffered(); }
  const Trailers& trailers() const override { return trailers_; }

  /// Reads what is left of the request (normally just End): a client
  /// stream's Finish does not complete while messages remain unread.
  asio::awaitable<void> drain() {
    while (!ended_) {
      const bool ok = co_await reader_.read(stream_, frame_);
      if (ok && frame_.has_end()) end_seen_ = true;
      if (!ok || frame_.has_end() || frame_.has_error()) break;
    }
    ended_ = true;
  }

 private:
  FrameStream& stream_;
  gb::FrameReader& reader_;
  Metrics& metrics_;
  tv1::Frame frame_;
  Trailers trailers_;
  bool ended_ = false;
  bool end_seen_ = false;
};

// A response whose length is known and at most this long crosses in one
// message with its head and end (and the stream's next Park).
constexpr std::int64_t kCoalesceBytes = 64 * 1024;

// The response as frames written back on the Pull stream. A small response
// of known length is gathered in `pending` and left there at its end: the
// caller adds the next Park and sends it (flush()); anything else goes out
// frame by frame.
class PullSink final : public ResponseSink {
 public:
  PullSink(FrameStream& s, gb::FrameBatch& pending, Metrics& m, gb::SendCredit* credit)
      : stream_(s), pending_(pending), metrics_(m), credit_(credit) {}
  asio::awaitable<void> head(tv1::ResponseHead& h) override {
    started_ = true;
    status_ = h.status();
    hold_ = h.status() != 101 && h.content_length() >= 0 && h.content_length() <= kCoalesceBytes;
    tv1::Frame f;
    *f.mutable_response_head() = std::move(h);
    pending_.add(std::move(f));
    if (!hold_) co_await flush();
  }
  asio::awaitable<void> body(std::string_view chunk) override {
    if (credit_) co_await credit_->take(chunk.size());
    metrics_.bytes_out.Increment(static_cast<double>(chunk.size()));
    tv1::Frame f;
    f.mutable_body()->mutable_data()->assign(chunk.data(), chunk.size());
    pending_.add(std::move(f));
    if (!hold_ || pending_.payload_bytes() >= static_cast<std::size_t>(kCoalesceBytes)) co_await flush();
  }
  asio::awaitable<void> end(const Trailers& trailers) override {
    tv1::Frame f;
    *f.mutable_end()->mutable_trailers() = trailers;
    pending_.add(std::move(f));
    if (!hold_) co_await flush();
    ended_ = true;
  }
  /// Sends what is gathered, if anything.
  asio::awaitable<void> flush() {
    const bool ok = co_await pending_.send(stream_);
    if (!ok) throw ExchangeError(tv1::ERROR_CODE_CLIENT_GONE, "broker stream closed while sending the response");
  }
  unsigned status() const { return status_; }
  /// True once the response's End went out (or waits in `pending`).
  bool ended() const { return ended_; }

 private:
  FrameStream& stream_;
  gb::FrameBatch& pending_;
  Metrics& metrics_;
  gb::SendCredit* credit_;  // null: not paced
  unsigned status_ = 0;
  bool hold_ = false;
  bool ended_ = false;
};

// A WebSocket session's answer on a shared Sessions stream (the refusal,
// or the 101 with the credit the edge starts with).
class SharedSink final : public ResponseSink {
 public:
  explicit SharedSink(gb::MuxSession& s) : s_(s) {}
  asio::awaitable<void> head(tv1::ResponseHead& h) override {
    started_ = true;
    status_ = h.status();
    tv1::Frame f;
    *f.mutable_response_head() = std::move(h);
    if (status_ == 101) f.mutable_response_head()->set_request_credit(gb::kSessionWindow);
    s_.send(std::move(f));
    co_return;
  }
  asio::awaitable<void> body(std::string_view chunk) override {
    // A refusal's body, in pieces (a stream's messages are bounded), and at
    // most 1 MiB of it, as the edge keeps.
    while (!chunk.empty() && sent_ < kMaxRefusalBodyBytes) {
      const std::size_t n = std::min({chunk.size(), kWsPieceBytes, kMaxRefusalBodyBytes - sent_});
      tv1::Frame f;
      f.mutable_body()->mutable_data()->assign(chunk.data(), n);
      s_.send(std::move(f));
      chunk.remove_prefix(n);
      sent_ += n;
    }
    co_return;
  }
  asio::awaitable<void> end(const Trailers& trailers) override {
    tv1::Frame f;
    *f.mutable_end()->mutable_trailers() = trailers;
    s_.send(std::move(f));
    co_return;
  }
  unsigned status() const { return status_; }

 private:
  gb::MuxSession& s_;
  unsigned status_ = 0;
  std::size_t sent_ = 0;
};

// A WebSocket upgrade on a Sessions stream has no body.
class NoBody final : public BodySource {
 public:
  asio::awaitable<bool> next(std::string_view&) override { co_return false; }
};

// Where a WebSocket session's messages cross the tunnel once the 101 went:
// its Pull stream, or its place on a Sessions stream.
class TunnelSide {
 public:
  virtual ~TunnelSide() = default;
  virtual net::WsPort& port() = 0;
  /// After the session: waits (bounded) for what the far side still sends.
  virtual asio::awaitable<void> finish() = 0;
  /// A session on a Sessions stream (it can run in a coroutine of its own).
  virtual std::shared_ptr<gb::MuxSession> shared() { return nullptr; }
};

class PullSide final : public TunnelSide {
 public:
  template <class... A>
  explicit PullSide(A&&... a) : port_(std::forward<A>(a)...) {}
  net::WsPort& port() override { return port_; }
  asio::awaitable<void> finish() override { return port_.drain(2s); }

 private:
  gb::FramePort port_;
};

class SharedSide final : public TunnelSide {
 public:
  explicit SharedSide(std::shared_ptr<gb::MuxSession> s) : s_(std::move(s)) {}
  net::WsPort& port() override { return *s_; }
  asio::awaitable<void> finish() override { return s_->drain(2s); }
  std::shared_ptr<gb::MuxSession> shared() override { return s_; }

 private:
  std::shared_ptr<gb::MuxSession> s_;
};

std::string status_class(unsigned status) { return status == 0 ? "error" : std::to_string(status / 100) + "xx"; }

}  // namespace

struct Connector::Impl {
  // One per broker address (after resolution): a channel, an Attach stream,
  // and the Pull streams parked there.
  struct Link {
    std::string name;    // host:port as configured
    std::string target;  // ipv4:a.b.c.d:port
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<tv1::Registration::Stub> stub;
    std::string session_id;
    bool attached = false;
    bool stopping = false;
    bool drain_requested = false;
    std::size_t parked = 0;
    std::size_t pulls = 0;  // pull coroutines still running on this link
    std::set<grpc::ClientContext*> parked_calls;
    grpc::ClientContext* attach_ctx = nullptr;
    std::unique_ptr<Event> wake;     // wakes the heartbeat writer
    std::unique_ptr<Event> stopped;  // set when the run loop has ended
    // The signed snapshot pushed on this session (the broker has it).
    std::shared_ptr<const pv1::SignedSnapshot> config_sent;
    // Exchanges paced by the broker's Credit messages on this Attach
    // session, by RequestHead.exchange_id.
    std::map<std::uint64_t, gb::SendCredit*> credits;
    // The Sessions stream for this Attach session's WebSocket sessions.
    std::shared_ptr<gb::Mux> mux;
  };

  asio::io_context& ioc;
  asio::any_io_executor ex;
  config::v1::ConnectorConfig cfg;
  std::shared_ptr<prometheus::Registry> prom;
  Metrics metrics;
  net::HttpClient http;
  std::map<std::string, net::Origin> origins;
  std::shared_ptr<grpc::ChannelCredentials> creds;
  std::unique_ptr<gb::Pump> pump;
  std::map<std::string, std::unique_ptr<Link>> links;  // by target
  std::size_t total_parked = 0;
  std::size_t in_flight = 0;
  bool draining = false;
  std::unique_ptr<Event> idle;
  std::mt19937 rng{std::random_device{}()};

  // Policies: the policy service's current snapshot, compiled, and the
  // signed bytes it came in (relayed to brokers unchanged).
  std::shared_ptr<const policy::Catalog> catalog;
  std::shared_ptr<const pv1::SignedSnapshot> catalog_wire;
  std::shared_ptr<const policy::SnapshotKeys> trusted_keys;
  policy::BasicVerifier basic_verifier;
  std::chrono::seconds file_check_interval{10};
  std::unique_ptr<grpc_bridge::SnapshotWatcher> policy_watch;
  std::unique_ptr<pv1::Policy::Stub> policy_stub;
  policy::Limiter limiter;
  policy::DecisionMetrics decisions_metrics;
  std::unique_ptr<policy::InvocationLog> invocations;
  policy::TransformClient transforms{ex};
  net::WsSessions ws_sessions;
  std::size_t max_ws_message_bytes = 16u << 20;

  Clock::duration reconnect_max;
  std::chrono::milliseconds connect_timeout;
  Clock::duration drain_timeout;
  Clock::duration resolve_interval;
  std::size_t pool_size;
  std::size_t max_concurrency;

  Impl(asio::io_context& io, config::v1::ConnectorConfig c, std::shared_ptr<prometheus::Registry> p)
      : ioc(io), ex(io.get_executor()), cfg(std::move(c)), prom(std::move(p)), metrics(*prom), http(ex),
        decisions_metrics(*prom, "connector") {
    reconnect_max = config::duration_or(cfg.reconnect_max(), 1s);
    connect_timeout = config::duration_or(cfg.connect_timeout(), gb::kConnectTimeout);
    drain_timeout = config::duration_or(cfg.drain_timeout(), 20s);
    resolve_interval = config::duration_or(cfg.resolve_interval(), 30s);
    pool_size = cfg.pool_size() ? cfg.pool_size() : 8;
    max_concurrency = cfg.max_concurrency() ? cfg.max_concurrency() : 256;
    if (cfg.max_ws_message_bytes()) max_ws_message_bytes = cfg.max_ws_message_bytes();
    idle = std::make_unique<Event>(ex);
    idle->set();
  }

  void start() {
    if (cfg.brokers().empty()) throw std::runtime_error("brokers: at least one broker address is required");
    if (cfg.aliases().empty()) throw std::runtime_error("aliases: at least one alias -> native service is required");
    if (connect_timeout < 100ms) {
      throw std::runtime_error("connect_timeout: " + std::to_string(connect_timeout.count()) +
                               "ms is too short for a TLS connect (at least 100ms)");
    }
    const auto& t = cfg.tls();
    if (t.ca_file().empty() || t.cert_file().empty() || t.key_file().empty()) {
      throw std::runtime_error("tls: ca_file, cert_file and key_file are required (the broker demands mutual TLS)");
    }
    file_check_interval = gb::refresh_seconds(cfg.file_check_interval());
    {
      grpc::ChannelArguments unused;
      creds = gb::client_credentials(&t, "brokers", unused, file_check_interval);
    }
    for (const auto& [alias, svc] : cfg.aliases()) {
      try {
        auto origin = net::Origin::parse(svc.url(), svc.ca_file());
        origin.connect_timeout = config::duration_or(svc.connect_timeout(), 5s);
        origin.read_timeout = config::duration_or(svc.read_timeout(), 60s);
        if (svc.max_idle_connections()) origin.max_idle = svc.max_idle_connections();
        origins.emplace(alias, std::move(origin));
      } catch (const std::exception& e) {
        throw std::runtime_error("aliases." + alias + ".url: " + e.what());
      }
    }
    pump = std::make_unique<gb::Pump>(std::make_unique<grpc::CompletionQueue>(), "cq-client");
    invocations = std::make_unique<policy::InvocationLog>(cfg.invocation_log_file());
    if (!cfg.policy().address().empty()) {
      const std::vector<std::string> key_files(cfg.trusted_config_keys().begin(), cfg.trusted_config_keys().end());
      trusted_keys = policy::SnapshotKeys::load(key_files, "trusted_config_keys");
      asio::co_spawn(ex, watch_files(key_files, file_check_interval, [this, key_files] { return reload_keys(key_files); },
                                     &draining),
                     asio::detached);
      start_policy_watch();
    }
    watch_native_cas();
    asio::co_spawn(ex, resolve_loop(), asio::detached);
  }

  // ------------------------------------------------------------ policy

  void start_policy_watch() {
    const auto& pc = cfg.policy();
    grpc::ChannelArguments args = gb::client_channel_args();
    auto pcreds = gb::client_credentials(pc.has_tls() ? &pc.tls() : nullptr, "policy", args, file_check_interval);
    policy_stub = pv1::Policy::NewStub(grpc::CreateCustomChannel(pc.address(), pcreds, args));
    policy_watch = std::make_unique<grpc_bridge::SnapshotWatcher>(ex, "policy", pc.address(), cfg.id());
    asio::co_spawn(ex,
                   policy_watch->run(
                       [this](grpc::ClientContext* ctx, const pv1::WatchRequest& req) {
                         return policy_stub->PrepareAsyncWatch(ctx, req, pump->cq());
                       },
                       [this] { return catalog ? catalog->version() : std::uint64_t{0}; },
                       [this](pv1::SignedSnapshot&& s) { apply_snapshot(std::move(s)); }),
                   asio::detached);
  }

  // The policy service's current snapshot, whatever its version (it is the
  // source of truth), if it carries a valid signature by a trusted key.
  void apply_snapshot(pv1::SignedSnapshot&& s) {
    policy::SnapshotOutcome outcome;
    auto got = policy::open_snapshot(*trusted_keys, std::make_shared<const pv1::SignedSnapshot>(std::move(s)),
                                     catalog.get(), "policy", outcome);
    metrics.config_updates.Add({{"result", policy::outcome_label(outcome)}}).Increment();
    if (!got) return;
    catalog = std::move(got->catalog);
    catalog_wire = std::move(got->wire);
    metrics.config_version.Set(static_cast<double>(catalog->version()));
    // Outward: each attached broker gets it on its Attach stream.
    for (auto& [_, l] : links) l->wake->set();
  }

  // New trusted keys: a snapshot no longer signed by one of them is dropped
  // (green policies then refuse with 503 until a trusted one comes).
  bool reload_keys(const std::vector<std::string>& files) {
    try {
      trusted_keys = policy::SnapshotKeys::load(files, "trusted_config_keys");
    } catch (const std::exception& e) {
      POSTERN_LOG(error, "trusted keys not reloaded; the old ones stay").kv("error", e.what());
      return true;
    }
    POSTERN_LOG(info, "trusted keys reloaded").kv("keys", trusted_keys->ids());
    pv1::Snapshot ignored;
    if (catalog_wire && !trusted_keys->open(*catalog_wire, ignored).empty()) {
      POSTERN_LOG(warn, "policy snapshot dropped: its signing key is no longer trusted")
          .kv("version", catalog->version());
      catalog.reset();
      catalog_wire.reset();
      metrics.config_version.Set(0);
      if (policy_watch) policy_watch->restart();
    }
    return true;
  }

  // A native service's CA bundle renewed: connections from now on verify
  // against the new one.
  void watch_native_cas() {
    for (auto& [alias, origin] : origins) {
      if (!origin.tls || origin.ca_file.empty()) continue;
      asio::co_spawn(ex, watch_files({origin.ca_file}, file_check_interval, [this, alias = alias] {
        auto& o = origins.at(alias);
        try {
          o.tls_context = net::make_client_tls(o.ca_file, "aliases." + alias + ".ca_file");
          POSTERN_LOG(info, "native CA bundle reloaded").kv("alias", alias).kv("ca_file", o.ca_file);
        } catch (const std::exception& e) {
          POSTERN_LOG(error, "native CA bundle not reloaded; the old one stays").kv("alias", alias).kv("error", e.what());
        }
        return true;
      }, &draining), asio::detached);
    }
  }

  // ------------------------------------------------------------ resolution

  asio::awaitable<void> resolve_loop() {
    asio::ip::tcp::resolver resolver(ex);
    asio::steady_timer timer(ex);
    while (!draining) {
      bool any = false;
      std::set<std::string> seen;
      for (const auto& b : cfg.brokers()) {
        auto colon = b.rfind(':');
        if (colon == std::string::npos) {
          POSTERN_LOG(error, "bad broker address").kv("broker", b).kv("error", "expected host:port");
          continue;
        }
        std::string host = b.substr(0, colon), port = b.substr(colon + 1);
        if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
        auto [ec, results] = co_await resolver.async_resolve(host, port, use_nothrow);
        if (ec) {
          POSTERN_LOG(warn, "cannot resolve broker").kv("broker", b).kv("error", ec.message());
          continue;
        }
        for (const auto& r : results) {
          const auto ep = r.endpoint();
          const std::string target = ep.address().is_v6()
                                         ? "ipv6:[" + ep.address().to_string() + "]:" + std::to_string(ep.port())
                                         : "ipv4:" + ep.address().to_string() + ":" + std::to_string(ep.port());
          any = true;
          if (!seen.insert(target).second) continue;
          auto it = links.find(target);
          // An address that left DNS and came back gets a fresh link once
          // the old one has wound down.
          if (it != links.end() && it->second->stopping && it->second->stopped->is_set() &&
              it->second->pulls == 0) {
            links.erase(it);
            it = links.end();
          }
          if (it == links.end()) add_link(b, host, target);
        }
      }
      // Brokers that are gone from DNS are detached; never the last ones if
      // DNS is merely failing.
      if (any) {
        for (auto& [target, link] : links) {
          if (!seen.contains(target) && !link->stopping) {
            POSTERN_LOG(info, "broker address gone").kv("broker", link->name).kv("target", target);
            stop_link(*link);
          }
        }
      }
      timer.expires_after(any ? resolve_interval : Clock::duration(2s));
      co_await timer.async_wait(use_nothrow);
    }
  }

  void add_link(const std::string& name, const std::string& host, const std::string& target) {
    auto link = std::make_unique<Link>();
    link->name = name;
    link->target = target;
    grpc::ChannelArguments args = gb::client_channel_args(connect_timeout);
    args.SetSslTargetNameOverride(cfg.tls().server_name().empty() ? host : cfg.tls().server_name());
    // One subchannel per link: two links to one address must not share it.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    link->channel = grpc::CreateCustomChannel(target, creds, args);
    link->stub = tv1::Registration::NewStub(link->channel);
    link->wake = std::make_unique<Event>(ex);
    link->stopped = std::make_unique<Event>(ex);
    auto* l = link.get();
    links.emplace(target, std::move(link));
    POSTERN_LOG(info, "broker link added").kv("broker", name).kv("target", target);
    asio::co_spawn(ex, run_link(*l), asio::detached);
  }

  void stop_link(Link& l) {
    l.stopping = true;
    if (l.attach_ctx) l.attach_ctx->TryCancel();
    for (auto* c : l.parked_calls) c->TryCancel();
    if (l.mux) l.mux->close();
    l.wake->set();
  }

  // ------------------------------------------------------------ attach

  asio::awaitable<void> run_link(Link& l) {
    Clock::duration backoff = 100ms;
    asio::steady_timer timer(ex);
    bool first = true;
    while (!l.stopping && !draining) {
      if (!first) metrics.reconnects.Increment();
      first = false;
      const bool welcomed = co_await attach_once(l);
      if (l.stopping || draining) break;
      if (welcomed) backoff = 100ms;
      std::uniform_real_distribution<double> jitter(0.5, 1.5);
      auto wait = std::chrono::duration_cast<Clock::duration>(backoff * jitter(rng));
      if (wait > reconnect_max) wait = reconnect_max;
      co_await wait_before_attach(l, timer, wait);
      backoff = std::min<Clock::duration>(backoff * 2, reconnect_max);
    }
    l.stopped->set();
  }

  // Waits `wait` before the next attach. When the broker could not be
  // reached, the wait also ends as soon as the link's channel connects, so a
  // restarted broker is attached to when gRPC reaches it (its reconnect
  // backoff is capped at 1 s), not that plus this backoff. A broker that was
  // reached and refused gets the whole wait.
  asio::awaitable<void> wait_before_attach(Link& l, asio::steady_timer& timer, Clock::duration wait) {
    auto state = l.channel->GetState(/*try_to_connect=*/true);
    if (state == GRPC_CHANNEL_READY) {
      timer.expires_after(wait);
      co_await timer.async_wait(use_nothrow);
      co_return;
    }
    const auto until = std::chrono::system_clock::now() + wait;
    while (state != GRPC_CHANNEL_READY && !l.stopping && !draining) {
      const bool changed =
          co_await gb::op([&](void* tag) { l.channel->NotifyOnStateChange(state, until, pump->cq(), tag); });
      if (!changed) break;  // the wait is over
      state = l.channel->GetState(/*try_to_connect=*/true);
    }
  }

  // One Attach stream, start to end. Returns true if the broker welcomed it.
  asio::awaitable<bool> attach_once(Link& l) {
    grpc::ClientContext ctx;
    l.attach_ctx = &ctx;
    std::unique_ptr<AttachStream> stream = l.stub->PrepareAsyncAttach(&ctx, pump->cq());
    bool ok = co_await gb::op([&](void* tag) { stream->StartCall(tag); });
    tv1::BrokerMessage msg;
    if (ok) {
      tv1::ConnectorMessage hello;
      auto* h = hello.mutable_hello();
      h->set_connector_id(cfg.id());
      for (const auto& [alias, _] : cfg.aliases()) h->add_aliases(alias);
      h->set_capacity(static_cast<std::uint32_t>(max_concurrency));
      h->set_pool_size(static_cast<std::uint32_t>(pool_size));
      h->set_version("postern-connector/0.1");
      h->set_flow_control(true);
      h->set_sessions(!cfg.websocket_stream_per_session());
      ok = co_await gb::write(*stream, hello);
    }
    if (ok) {
      Deadline d(ex, 10s, [&ctx] { ctx.TryCancel(); });
      ok = co_await gb::read(*stream, msg);
    }
    if (!ok || !msg.has_welcome()) {
      grpc::Status st;
      co_await gb::op([&](void* tag) { stream->Finish(&st, tag); });
      l.attach_ctx = nullptr;
      if (st.error_code() == grpc::StatusCode::PERMISSION_DENIED) {
        metrics.refusals.Increment();
        POSTERN_LOG(error, "registration refused by broker")
            .kv("broker", l.name)
            .kv("target", l.target)
            .kv("error", st.error_message());
      } else if (!l.stopping) {
        POSTERN_LOG(warn, "attach failed")
            .kv("broker", l.name)
            .kv("target", l.target)
            .kv("code", static_cast<int>(st.error_code()))
            .kv("error", st.error_message());
      }
      co_return false;
    }

    const auto& w = msg.welcome();
    l.session_id = w.session_id();
    l.attached = true;
    l.drain_requested = false;
    const auto hb_interval = std::chrono::milliseconds(w.heartbeat_interval_ms() ? w.heartbeat_interval_ms() : 5000);
    const auto hb_timeout = std::chrono::milliseconds(w.heartbeat_timeout_ms() ? w.heartbeat_timeout_ms() : 15000);
    update_attached_gauge();
    POSTERN_LOG(info, "attached")
        .kv("broker", l.name)
        .kv("target", l.target)
        .kv("broker_id", w.broker_id())
        .kv("session", l.session_id);
    if (draining) request_drain(l);
    refill();
    if (!cfg.websocket_stream_per_session()) open_sessions(l);

    // Writer: heartbeats, and the drain request when asked.
    Event writer_done(ex);
    l.wake->reset();
    asio::co_spawn(
        ex,
        [&]() -> asio::awaitable<void> {
          std::uint64_t seq = 0;
          bool drain_sent = false;
          l.config_sent.reset();
          while (l.attached && !l.stopping) {
            // A Sessions stream the broker ended while the session lives on
            // is opened again (until then, the broker's sessions for these
            // aliases go on Pull streams).
            // (Not a broker that has no such method: an older one.)
            if (l.mux && l.mux->ended().is_set() && !draining && !l.drain_requested &&
                l.mux->status().error_code() != grpc::StatusCode::UNIMPLEMENTED) {
              open_sessions(l);
            }
            const bool config_due = catalog_wire && catalog_wire != l.config_sent;
            if (!config_due) {
              co_await l.wake->wait_for(hb_interval);
              l.wake->reset();
            }
            if (!l.attached || l.stopping) break;
            tv1::ConnectorMessage m;
            if (l.drain_requested && !drain_sent) {
              m.mutable_drain()->set_reason("connector shutting down");
              drain_sent = true;
            } else if (catalog_wire && catalog_wire != l.config_sent) {
              *m.mutable_config() = *catalog_wire;
              l.config_sent = catalog_wire;
            } else {
              auto* hb = m.mutable_heartbeat();
              hb->set_seq(++seq);
              hb->set_in_flight(static_cast<std::uint32_t>(in_flight));
              hb->set_parked(static_cast<std::uint32_t>(l.parked));
            }
            const bool sent = co_await gb::write(*stream, m);
            if (!sent) break;
          }
        },
        [&](std::exception_ptr) { writer_done.set(); });

    // Reader: a broker silent past the timeout is gone.
    {
      Deadline silence(ex, hb_timeout, [&ctx, &l] {
        POSTERN_LOG(warn, "broker silent, reconnecting").kv("broker", l.name).kv("target", l.target);
        ctx.TryCancel();
      });
      for (;;) {
        tv1::BrokerMessage m;
        const bool got = co_await gb::read(*stream, m);
        if (!got) break;
        silence.rearm(hb_timeout);
        if (m.has_credit()) {
          const auto it = l.credits.find(m.credit().exchange_id());
          if (it == l.credits.end()) continue;  // that exchange is over here
          if (m.credit().release()) {
            it->second->release();
          } else {
            it->second->grant(m.credit().bytes());
          }
        }
      }
    }
    // Exchanges of this session get no more credit: they go on unpaced.
    for (auto& [id, credit] : l.credits) credit->release();
    l.attached = false;
    // Its WebSocket sessions run on; their stream closes after the last.
    if (l.mux) asio::co_spawn(ex, close_when_idle(std::move(l.mux)), asio::detached);
    l.mux.reset();
    update_attached_gauge();
    ctx.TryCancel();
    for (auto* c : l.parked_calls) c->TryCancel();
    l.wake->set();
    co_await writer_done.wait();
    grpc::Status st;
    co_await gb::op([&](void* tag) { stream->Finish(&st, tag); });
    l.attach_ctx = nullptr;
    if (!l.stopping && !draining) {
      POSTERN_LOG(warn, "detached").kv("broker", l.name).kv("target", l.target).kv("error", st.error_message());
    }
    co_return true;
  }

  // Opens the Sessions stream that carries the Attach session's WebSocket
  // sessions (tunnel.proto, Registration.Sessions).
  void open_sessions(Link& l) {
    auto ctx = std::make_unique<grpc::ClientContext>();
    auto stream = l.stub->PrepareAsyncSessions(ctx.get(), pump->cq());
    l.mux = std::make_shared<gb::Mux>(ex, std::move(ctx), std::move(stream),
                                      [this](std::shared_ptr<gb::MuxSession> s, tv1::RequestHead&& head) {
                                        asio::co_spawn(ex, serve_shared(std::move(s), std::move(head)),
                                                       asio::detached);
                                      });
    l.mux->set_max_message_bytes(max_ws_message_bytes);
    l.mux->set_credit_wait(&metrics.credit_wait);
    tv1::Frame park;
    park.mutable_park()->set_session_id(l.session_id);
    l.mux->start(std::move(park));
  }

  static asio::awaitable<void> close_when_idle(std::shared_ptr<gb::Mux> m) {
    asio::steady_timer t(m->executor());
    while (m->sessions() > 0 && !m->ended().is_set()) {
      t.expires_after(1s);
      co_await t.async_wait(use_nothrow);
    }
    m->close();
  }

  void request_drain(Link& l) {
    l.drain_requested = true;
    l.wake->set();
  }

  void update_attached_gauge() {
    std::size_t n = 0;
    for (auto& [_, l] : links) n += l->attached ? 1 : 0;
    metrics.brokers_attached.Set(static_cast<double>(n));
  }

  // ------------------------------------------------------------ pulls

  // Parks streams until each attached link has pool_size of them, within
  // the overall concurrency limit.
  void refill() {
    if (draining) return;
    for (auto& [_, lp] : links) {
      Link& l = *lp;
      while (l.attached && !l.stopping && !l.drain_requested && l.parked < pool_size &&
             total_parked + in_flight < max_concurrency) {
        ++l.parked;
        ++total_parked;
        metrics.parked.Set(static_cast<double>(total_parked));
        asio::co_spawn(ex, pull(l, l.session_id), asio::detached);
      }
    }
  }

  // Below this many parked streams on a link, taking one parks replacements
  // at once. Streams come back after clean exchanges, so opening one per
  // exchange would only churn; the broker ends streams beyond pool_size
  // (Hello.pool_size) once they stay unused for a moment.
  std::size_t low_water() const { return std::max<std::size_t>(1, pool_size / 2); }

  // One Pull stream, for as many exchanges as it is parked again for (see
  // Registration.Pull in tunnel.proto). Counted in `parked` by refill()
  // before it starts, and by itself each time it parks again.
  asio::awaitable<void> pull(Link& l, std::string session_id) {
    ++l.pulls;
    struct Done {
      Link& l;
      ~Done() { --l.pulls; }
    } done{l};
    grpc::ClientContext ctx;
    l.parked_calls.insert(&ctx);
    // The call's headers leave with the first Park.
    ctx.set_initial_metadata_corked(true);
    std::unique_ptr<FrameStream> stream = l.stub->PrepareAsyncPull(&ctx, pump->cq());
    gb::start_detached(*stream);
    bool ok = true;
    tv1::Frame frame;
    gb::FrameReader reader;
    // The last response's frames, when they wait to go with the next Park.
    gb::FrameBatch pending;
    for (;;) {
      if (ok) {
        frame.Clear();
        frame.mutable_park()->set_session_id(session_id);
        pending.add(std::move(frame));
        ok = co_await pending.send(*stream);
      }
      if (ok) {
        const bool got = co_await reader.read(*stream, frame);
        ok = got;
      }
      l.parked_calls.erase(&ctx);
      --l.parked;
      --total_parked;
      metrics.parked.Set(static_cast<double>(total_parked));

      if (!ok || !frame.has_request_head()) {
        grpc::Status st;
        co_await gb::op([&](void* tag) { stream->Finish(&st, tag); });
        // Not re-parked at once: a broker that ends parked streams right away
        // must not turn this into a busy loop.
        asio::steady_timer t(ex, 100ms);
        co_await t.async_wait(use_nothrow);
        refill();
        co_return;
      }

      ++in_flight;
      idle->reset();
      metrics.in_flight.Set(static_cast<double>(in_flight));
      if (l.parked < low_water()) refill();
      const bool reusable = co_await serve(l, session_id, ctx, *stream, reader, pending, frame.request_head());
      const bool again =
          reusable && !draining && l.attached && !l.stopping && !l.drain_requested && l.session_id == session_id;
      if (again) {
        // Parked again before the exchange stops counting, so the two never
        // add up to less than the streams open.
        ++l.parked;
        ++total_parked;
        metrics.parked.Set(static_cast<double>(total_parked));
        l.parked_calls.insert(&ctx);
        exchange_over();
        continue;
      }
      // Retired: a half-close tells the broker not to park it again.
      if (reusable) co_await pending.send_last(*stream);
      grpc::Status st;
      co_await gb::op([&](void* tag) { stream->Finish(&st, tag); });
      exchange_over();
      refill();
      co_return;
    }
  }

  void exchange_over() {
    --in_flight;
    metrics.in_flight.Set(static_cast<double>(in_flight));
    if (in_flight == 0) idle->set();
  }

  // Serves one exchange. True when it ended cleanly both ways (the request
  // read to its End, the response's End sent, not a WebSocket session) and
  // the stream is still open for writing: the caller parks it again or
  // retires it. Otherwise the stream is already half-closed (or closed).
  //
  // `reader` has the rest of the request (coalesced frames may be there
  // already). A clean response may be left in `pending`, to go with the
  // caller's next Park or half-close; otherwise `pending` is sent here.
  asio::awaitable<bool> serve(Link& l, const std::string& session_id, grpc::ClientContext& ctx, FrameStream& stream,
                              gb::FrameReader& reader,
                              gb::FrameBatch& pending, const tv1::RequestHead& in_head) {
    PullBody body(stream, reader, metrics);
    // Paced by the broker's credit, when it asked for that and the Attach
    // session that carries the credit is still this stream's.
    std::optional<gb::SendCredit> credit;
    const std::uint64_t exchange_id = in_head.exchange_id();
    if (exchange_id && in_head.response_credit() && l.attached && l.session_id == session_id) {
      credit.emplace(ex, in_head.response_credit(), &metrics.credit_wait);
      l.credits[exchange_id] = &*credit;
    }
    struct Unlist {
      Link& l;
      std::uint64_t id;
      gb::SendCredit* listed;
      ~Unlist() {
        // Unless a newer session's exchange took the same id meanwhile.
        const auto it = l.credits.find(id);
        if (listed && it != l.credits.end() && it->second == listed) l.credits.erase(it);
      }
    } unlist{l, exchange_id, credit ? &*credit : nullptr};
    PullSink sink(stream, pending, metrics, credit ? &*credit : nullptr);
    // Messages toward the client take the broker's credit, as a body does.
    std::optional<PullSide> ws;
    if (in_head.websocket()) ws.emplace(ex, stream, ctx, max_ws_message_bytes, credit ? &*credit : nullptr);
    Answered a;
    co_await answer(in_head, body, sink, ws ? &*ws : nullptr, a);
    if (a.failure && a.failure->code() != tv1::ERROR_CODE_CLIENT_GONE) {
      tv1::Frame f;
      f.mutable_error()->set_code(a.failure->code());
      f.mutable_error()->set_message(a.failure->what());
      pending.add(std::move(f));
      co_await pending.send(stream);
    }
    if (a.failure) pending.clear();
    // A clean HTTP exchange leaves the stream open for the caller to park
    // again; it is clean only once the request's End has been read too.
    if (a.websocket_ran) {
      pending.clear();
      co_return false;
    }
    bool http_ok = !a.failure && !in_head.websocket() && sink.ended();
    // Nothing in `pending` may wait past a half-close or a wait for the
    // broker.
    if (!http_ok) co_await pending.send_last(stream);
    if (body.rest_buffered()) {
      co_await body.drain();  // no I/O
    } else {
      if (!(co_await pending.send(stream))) http_ok = false;
      Deadline d(ex, 5s, [&ctx] { ctx.TryCancel(); });
      co_await body.drain();
    }
    const bool reusable = http_ok && body.end_seen();
    if (http_ok && !reusable) co_await pending.send_last(stream);
    co_return reusable;
  }

  // How answer() went: the error to send back (if none was sent yet), and
  // whether a WebSocket session ran (its tunnel side is closed then).
  struct Answered {
    std::optional<ExchangeError> failure;
    bool websocket_ran = false;
    // A shared session runs on in a coroutine of its own, which counts the
    // exchange in flight until it ends.
    bool detached = false;
  };

  // Everything between a request head and its answer that is the same on
  // any stream: green-zone policies, the native service (HTTP, or the
  // WebSocket session on `ws`), metrics and the invocation record.
  asio::awaitable<void> answer(const tv1::RequestHead& in_head, BodySource& body, ResponseSink& sink, TunnelSide* ws,
                               Answered& out) {
    const auto started = Clock::now();
    tv1::RequestHead head = in_head;
    const auto cat = catalog;
    // Nothing from the other zone is taken on trust: the head must be one a
    // sound edge sends, and the API is found here, from alias and path.
    std::string bad = head_problem(head);
    const policy::CompiledApi* api = bad.empty() ? own_api(cat.get(), head) : nullptr;
    // Policies the edge says it enforced are skipped only for exactly that
    // API, and only if it is one the DMZ enforces; anything else (a green
    // API, an API the edge did not name, as with its default alias) is
    // enforced here.
    const bool enforce = api && (api->green || api->name != in_head.api());
    const pv1::Policies* pol = enforce ? &api->def->policies() : nullptr;
    const auto capture = policy::capture_limits(pol);
    policy::Decisions decisions;
    policy::Identity identity;
    policy::Limiter::Hold hold;
    // Threat protection is the edge's.
    policy::PolicedBody policed_body(body, policy::kNoThreatRules, false, capture.request);
    if (enforce) policed_body.filter_trailers_for(api);
    policy::PolicedSink policed_sink(sink, pol ? &pol->transform() : nullptr, capture.response);

    std::optional<ExchangeError>& failure = out.failure;
    bool& websocket_ran = out.websocket_ran;
    unsigned status = 0;
    try {
      if (!bad.empty()) throw ExchangeError(tv1::ERROR_CODE_BAD_REQUEST, "refused at the connector: " + bad);
      if (enforce) {
        co_await basic_verifier.prepare(cat, *api, head);
        std::string host;
        for (const auto& h : head.headers()) {
          if (net::iequals(h.name(), "x-forwarded-host")) host = h.value();
        }
        auto verdict = policy::identify(*cat, *api, head, host, std::chrono::system_clock::now(), identity, decisions);
        if (verdict.allowed() && head.websocket()) {
          verdict = policy::check_origin(*api, policy::header_value(head.headers(), "origin"), decisions);
        }
        if (verdict.allowed()) verdict = limiter.admit(*api, identity, head.client_ip(), Clock::now(), hold, decisions);
        if (!verdict.allowed()) {
          std::string problem;
          auto rh = policy::rejection(verdict, head.request_id(), problem);
          status = rh.status();
          co_await policed_sink.head(rh);
          co_await policed_sink.body(problem);
          const Trailers none;
          co_await policed_sink.end(none);
        } else {
          policy::transform_request(pol->transform(), head);
        }
      }
      if (!policed_sink.started()) {
        auto it = origins.find(head.alias());
        if (it == origins.end()) {
          throw ExchangeError(tv1::ERROR_CODE_UNKNOWN_ALIAS,
                              "connector '" + cfg.id() + "' has no native service for alias '" + head.alias() + "'");
        }
        std::chrono::milliseconds head_timeout = it->second.read_timeout;
        if (head.timeout_ms() > 0) head_timeout = std::min(head_timeout, std::chrono::milliseconds(head.timeout_ms()));
        policed_sink.stamp_native(Clock::now(), identity.application);
        if (head.websocket() && ws) {
          const pv1::Policies* wpol = api ? &api->def->policies() : nullptr;
          websocket_ran = co_await serve_websocket(*ws, head, it->second, head_timeout, enforce ? wpol : nullptr,
                                                   identity, decisions, sink, status, cat, hold, out.detached,
                                                   started);
        } else {
          co_await http.exchange(it->second, head, policed_body, policed_sink, head_timeout);
          status = policed_sink.status();
        }
      }
    } catch (const ExchangeError& e) {
      failure = e;
    } catch (const std::exception& e) {
      failure = ExchangeError(tv1::ERROR_CODE_INTERNAL, e.what());
    }
    if (failure) {
      status = 0;
      POSTERN_LOG(warn, "exchange failed")
          .kv("request_id", head.request_id())
          .kv("alias", head.alias())
          .kv("code", std::string(error_slug(failure->code())))
          .kv("error", failure->what());
    }
    const std::string alias = head.alias();
    // A shared session counts when it ends (run_shared), as on Pull.
    if (!out.detached) {
      count_exchange(alias, failure ? std::string(error_slug(failure->code())) : status_class(status), started);
    }
    if (enforce) decisions_metrics.count(api->name, decisions);
    if (pol && pol->has_log_invocation() && !websocket_ran) {
      if (auto r = policy::exchange_record(pol->log_invocation(), policed_body, policed_sink, failure)) {
        r->request_id = head.request_id();
        r->api = api->name;
        r->application = identity.application;
        r->client_ip = head.client_ip();
        r->method = head.method();
        r->path = policy::log_path(head.target());
        r->enforced_by = "connector";
        r->total_ms = std::chrono::duration<double, std::milli>(Clock::now() - started).count();
        r->decisions = std::move(decisions);
        invocations->write(*r, pol->log_invocation().compress_payload());
      }
    }
  }

  // What makes a request head from the tunnel unfit to write to a native
  // service: a method or header name that is no token, a value with CR, LF
  // or NUL (request splitting), a target that is not the normalised path
  // the edge routes. "" when it is fine.
  static std::string head_problem(const tv1::RequestHead& head) {
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
  // base path matches (the target becomes its native path); then, always,
  // the API on the alias whose native prefix holds the target (the longest:
  // the most specific). Null: no API (the request passes by alias only).
  static const policy::CompiledApi* own_api(const policy::Catalog* cat, tv1::RequestHead& head) {
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
      // Equally specific APIs (allow_overlap): the one the edge named.
      const bool longer = !best || a.prefix.size() > best->prefix.size();
      const bool tie_named = best && a.prefix.size() == best->prefix.size() && a.name == head.api();
      if (longer || tie_named) best = &a;
    }
    if (best) head.set_api(best->name);
    return best;
  }

  // A WebSocket session a broker opened on a link's Sessions stream.
  asio::awaitable<void> serve_shared(std::shared_ptr<gb::MuxSession> s, tv1::RequestHead head) {
    // (While draining, a session that gets here before the broker has
    // heard of the drain is closed with 1001 once open, as on Pull.)
    if (in_flight >= max_concurrency) {
      tv1::Frame f;
      f.mutable_error()->set_code(tv1::ERROR_CODE_NO_CAPACITY);
      f.mutable_error()->set_message("connector '" + cfg.id() + "' runs " + std::to_string(max_concurrency) +
                                     " exchanges already");
      s->send(std::move(f));
      co_return;
    }
    ++in_flight;
    idle->reset();
    metrics.in_flight.Set(static_cast<double>(in_flight));
    struct Over {
      Impl& im;
      bool* handed_on;
      ~Over() {
        if (!*handed_on) im.exchange_over();
      }
    };
    Answered a;
    Over over{*this, &a.detached};
    SharedSink sink(*s);
    SharedSide side(s);
    NoBody body;
    co_await answer(head, body, sink, &side, a);
    if (a.failure && a.failure->code() != tv1::ERROR_CODE_CLIENT_GONE) {
      tv1::Frame f;
      f.mutable_error()->set_code(a.failure->code());
      f.mutable_error()->set_message(a.failure->what());
      s->send(std::move(f));
    }
  }

  // ------------------------------------------------------------ websocket

  void count_exchange(const std::string& alias, const std::string& code, Clock::time_point started) {
    metrics.requests.Add({{"alias", alias}, {"code", code}}).Increment();
    metrics.duration.Add({{"alias", alias}}, kLatencyBuckets)
        .Observe(std::chrono::duration<double>(Clock::now() - started).count());
  }

  // Opens the WebSocket to the native service; on its 101 answers 101 up
  // the tunnel and relays the session; on a refusal passes the refusal on.
  // Returns true when a session ran (the tunnel side is closed then).
  asio::awaitable<bool> serve_websocket(TunnelSide& tunnel, const tv1::RequestHead& head,
                                        const net::Origin& origin, std::chrono::milliseconds head_timeout,
                                        const pv1::Policies* pol, const policy::Identity& identity,
                                        const policy::Decisions& decisions, ResponseSink& sink, unsigned& status,
                                        const std::shared_ptr<const policy::Catalog>& cat,
                                        policy::Limiter::Hold& hold, bool& detached, Clock::time_point started) {
    net::WsStreamOptions o;
    o.max_message_bytes = max_ws_message_bytes;
    o.ping_interval = policy::WsSessionPolicies::ping_interval(pol);
    o.handshake_timeout = head_timeout;
    auto up = co_await http.websocket(origin, head, o);
    status = up.head.status();
    if (!up.port) {
      co_await sink.head(up.head);
      if (!up.body.empty()) co_await sink.body(up.body);
      const Trailers none;
      co_await sink.end(none);
      co_return false;
    }
    const std::string subprotocol(policy::header_value(up.head.headers(), "sec-websocket-protocol"));
    co_await sink.head(up.head);
    policy::WsSessionInfo info{head.request_id(), head.api(), identity.application, head.client_ip(),
                               policy::log_path(head.target()), subprotocol, "connector"};
    if (auto shared = tunnel.shared()) {
      // The session runs on in a coroutine of its own, so that this
      // exchange's coroutines (policies, the upgrade: about 4 KiB) end now
      // rather than stay suspended under it for its whole life. It takes
      // what it needs: the native stream, the policies (and the catalog that
      // holds them), the concurrency slot.
      detached = true;
      asio::co_spawn(ex,
                     run_shared(std::move(shared), std::move(up.port), cat, pol, std::move(info),
                                policy::Decisions(decisions), std::move(hold), head.alias(), started),
                     [this](std::exception_ptr e) {
                       if (e) POSTERN_LOG(error, "websocket session failed");
                       exchange_over();
                     });
      co_return true;
    }
    co_await relay_session(tunnel, *up.port, pol, std::move(info), decisions, head.alias());
    co_return true;
  }

  asio::awaitable<void> run_shared(std::shared_ptr<gb::MuxSession> s, std::unique_ptr<net::WsPort> native,
                                   std::shared_ptr<const policy::Catalog> cat, const pv1::Policies* pol,
                                   policy::WsSessionInfo info, policy::Decisions decisions,
                                   policy::Limiter::Hold hold, std::string alias, Clock::time_point started) {
    SharedSide side(std::move(s));
    std::exception_ptr failed;
    try {
      co_await relay_session(side, *native, pol, std::move(info), decisions, alias);
    } catch (...) {
      failed = std::current_exception();
    }
    count_exchange(alias, status_class(failed ? 0 : 101), started);
    if (failed) std::rethrow_exception(failed);
  }

  // Relays a session between the tunnel and the native service until both
  // have closed; per-message policies, metrics and the invocation record.
  asio::awaitable<void> relay_session(TunnelSide& tunnel, net::WsPort& native, const pv1::Policies* pol,
                                      policy::WsSessionInfo info, const policy::Decisions& decisions,
                                      const std::string& alias) {
    policy::WsSessionPolicies hooks(pol, std::move(info), *invocations, &transforms);
    auto& bytes = metrics.ws_bytes;
    net::WsRelay session(ex, tunnel.port(), native, &hooks,
                         policy::WsSessionPolicies::relay_options(
                             pol, bytes.Add({{"alias", alias}, {"direction", "client_to_server"}}),
                             bytes.Add({{"alias", alias}, {"direction", "server_to_client"}})));
    hooks.opened();
    metrics.ws_sessions.Increment();
    co_await ws_sessions.run(session);
    metrics.ws_sessions.Decrement();
    const auto& st = session.stats();
    metrics.ws_messages.Add({{"alias", alias}, {"direction", "client_to_server"}})
        .Increment(static_cast<double>(st.messages[0]));
    metrics.ws_messages.Add({{"alias", alias}, {"direction", "server_to_client"}})
        .Increment(static_cast<double>(st.messages[1]));
    co_await tunnel.finish();
    hooks.closed(st, decisions);
  }

  // ------------------------------------------------------------ drain

  asio::awaitable<void> drain() {
    draining = true;
    if (policy_watch) policy_watch->stop();
    ws_sessions.stop_all(1001, "connector draining");
    POSTERN_LOG(info, "connector draining").kv("in_flight", static_cast<std::uint64_t>(in_flight));
    for (auto& [_, l] : links) {
      if (l->attached) {
        request_drain(*l);
      } else {
        stop_link(*l);
      }
    }
    // The broker answers a drain by ending our parked streams; exchanges in
    // flight run to completion.
    const auto until = Clock::now() + drain_timeout;
    asio::steady_timer t(ex);
    while ((in_flight > 0 || total_parked > 0) && Clock::now() < until) {
      if (total_parked == 0) {
        co_await idle->wait_for(until - Clock::now());
      } else {
        t.expires_after(20ms);
        co_await t.async_wait(use_nothrow);
      }
    }
    for (auto& [_, l] : links) stop_link(*l);
    for (auto& [_, l] : links) co_await l->stopped->wait_for(5s);
    POSTERN_LOG(info, "connector detached from all brokers");
  }
};

Connector::Connector(asio::io_context& ioc, config::v1::ConnectorConfig config,
                     std::shared_ptr<prometheus::Registry> metrics)
    : impl_(std::make_unique<Impl>(ioc, std::move(config), std::move(metrics))) {}
Connector::~Connector() = default;
void Connector::start() { impl_->start(); }
asio::awaitable<void> Connector::drain() { return impl_->drain(); }
bool Connector::attached() const {
  for (auto& [_, l] : impl_->links) {
    if (l->attached) return true;
  }
  return false;
}

}  // namespace postern::connector
