#include "broker/broker.hpp"

#include <grpcpp/grpcpp.h>
#include <grpcpp/security/auth_metadata_processor.h>
#include <grpcpp/security/server_credentials.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <algorithm>
#include <boost/json.hpp>
#include <chrono>
#include <map>
#include <set>
#include <thread>

#include "broker/attach_session.hpp"
#include "broker/config_check.hpp"
#include "broker/config_relay.hpp"
#include "broker/exchange_router.hpp"
#include "broker/registry.hpp"
#include "common/observability/metric_children.hpp"
#include "common/config/checks.hpp"
#include "common/config/yaml_proto.hpp"
#include "common/event.hpp"
#include "common/file_watch.hpp"
#include "common/grpc/bridge.hpp"
#include "common/grpc/channel.hpp"
#include "common/observability/log.hpp"
#include "common/observability/status_page.hpp"
#include "common/version.hpp"
#include "common/tunnel/lane_io.hpp"
#include "postern/tunnel/v1/tunnel.grpc.pb.h"

namespace postern::broker {

namespace tv1 = tunnel::v1;
namespace gb = grpc_bridge;
using namespace std::chrono_literals;

namespace {

const prometheus::Histogram::BucketBoundaries kLatencyBuckets{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                              0.25,  0.5,    1,     2.5,  5,     10,   30, 60};
const prometheus::Histogram::BucketBoundaries kFramesBuckets{1, 2, 4, 8, 16, 32, 64, 128, 256, 512};

struct Metrics {
  prometheus::Family<prometheus::Gauge>& connectors;
  prometheus::Family<prometheus::Gauge>& unserved;
  prometheus::Gauge& in_flight;
  prometheus::Family<prometheus::Counter>& exchanges;
  prometheus::Family<prometheus::Counter>& refusals;
  prometheus::Counter& attaches;
  prometheus::Family<prometheus::Counter>& messages;
  prometheus::Histogram& duration;
  prometheus::Counter& bytes_up;
  prometheus::Counter& bytes_down;
  prometheus::Gauge& config_version;
  prometheus::Gauge& config_watchers;
  prometheus::Family<prometheus::Counter>& config_updates;
  prometheus::Family<prometheus::Gauge>& lanes;
  prometheus::Family<prometheus::Counter>& lanes_opened;
  prometheus::Gauge& ws_sessions;
  prometheus::Histogram& frames_per_message;
  // Counted on every exchange: found by label values, not Family::Add.
  observability::MetricChildren<prometheus::Counter> exchanges_by{exchanges, {"alias", "result"}};

  explicit Metrics(prometheus::Registry& r)
      : connectors(prometheus::BuildGauge()
                       .Name("postern_broker_connectors_attached")
                       .Help("Connector sessions attached, per alias")
                       .Register(r)),
        unserved(prometheus::BuildGauge()
                     .Name("postern_broker_alias_unserved")
                     .Help("1 for each alias the config routes APIs to that no connector attached here serves: "
                           "its APIs answer 503 through this broker")
                     .Register(r)),
        in_flight(prometheus::BuildGauge()
                      .Name("postern_broker_exchanges_in_flight")
                      .Help("Exchanges routed to a connector right now")
                      .Register(r)
                      .Add({})),
        exchanges(prometheus::BuildCounter()
                      .Name("postern_broker_exchanges_total")
                      .Help("Exchanges by alias and result")
                      .Register(r)),
        refusals(prometheus::BuildCounter()
                     .Name("postern_broker_registration_refusals_total")
                     .Help("Calls refused on the registration and relay ports, by reason")
                     .Register(r)),
        attaches(prometheus::BuildCounter()
                     .Name("postern_broker_attaches_total")
                     .Help("Connector sessions accepted")
                     .Register(r)
                     .Add({})),
        messages(prometheus::BuildCounter()
                     .Name("postern_broker_tunnel_messages_total")
                     .Help("Lane messages read, by sender (edge, connector); frames ready together share one")
                     .Register(r)),
        duration(prometheus::BuildHistogram()
                     .Name("postern_broker_exchange_duration_seconds")
                     .Help("Time from an exchange's request head to its end")
                     .Register(r)
                     .Add({}, kLatencyBuckets)),
        bytes_up(prometheus::BuildCounter()
                     .Name("postern_broker_request_bytes_total")
                     .Help("Request body and client message bytes relayed to connectors")
                     .Register(r)
                     .Add({})),
        bytes_down(prometheus::BuildCounter()
                       .Name("postern_broker_response_bytes_total")
                       .Help("Response body and server message bytes relayed to edges")
                       .Register(r)
                       .Add({})),
        config_version(prometheus::BuildGauge()
                           .Name("postern_broker_config_version")
                           .Help("Version of the policy snapshot fanned out to edges (0: none yet)")
                           .Register(r)
                           .Add({})),
        config_watchers(prometheus::BuildGauge()
                            .Name("postern_broker_config_watchers")
                            .Help("Edges watching for policy snapshots")
                            .Register(r)
                            .Add({})),
        config_updates(prometheus::BuildCounter()
                           .Name("postern_broker_config_updates_total")
                           .Help("Snapshots received from connectors, by result: applied, unchanged, untrusted (no "
                                 "valid signature by a trusted key), invalid, not_permitted (an identity without "
                                 "publish_config)")
                           .Register(r)),
        lanes(prometheus::BuildGauge()
                  .Name("postern_broker_lanes")
                  .Help("Lanes open, by peer (edge, connector): each carries many exchanges")
                  .Register(r)),
        lanes_opened(prometheus::BuildCounter()
                         .Name("postern_broker_lanes_opened_total")
                         .Help("Lane calls accepted, by peer (edge, connector): a steady count means lanes are kept")
                         .Register(r)),
        ws_sessions(prometheus::BuildGauge()
                        .Name("postern_broker_websocket_sessions")
                        .Help("WebSocket sessions routed right now")
                        .Register(r)
                        .Add({})),
        frames_per_message(prometheus::BuildHistogram()
                               .Name("postern_broker_lane_frames_per_message")
                               .Help("Frames in each lane message written: how many exchanges share a gRPC message")
                               .Register(r)
                               .Add({}, kFramesBuckets)) {}
};

// The relay port with client certificates: every call (Lane, WatchConfig)
// must come from an edge identity the config names, checked by gRPC before
// the call reaches a handler. A connector's certificate from the same CA
// does not make it an edge.
class EdgeIdentityCheck final : public grpc::AuthMetadataProcessor {
 public:
  EdgeIdentityCheck(std::vector<std::string> allowed, prometheus::Counter& refused)
      : allowed_(std::move(allowed)), refused_(refused) {}
  bool IsBlocking() const override { return false; }
  grpc::Status Process(const InputMetadata&, grpc::AuthContext* context, OutputMetadata*, OutputMetadata*) override {
    const auto ids = context ? peer_identities(*context) : std::vector<std::string>{};
    for (const auto& id : ids) {
      if (std::find(allowed_.begin(), allowed_.end(), id) != allowed_.end()) return grpc::Status::OK;
    }
    refused_.Increment();
    const std::string who = ids.empty() ? std::string("(no identity)") : ids.front();
    POSTERN_LOG(warn, "relay call refused").kv("identity", who).kv("reason", "not an edge identity");
    return {grpc::StatusCode::PERMISSION_DENIED, "identity '" + who + "' is not an edge identity (edge_identities)"};
  }

 private:
  std::vector<std::string> allowed_;
  prometheus::Counter& refused_;
};

}  // namespace

struct Broker::Impl {
  asio::io_context& ioc;
  asio::any_io_executor ex;
  config::v1::BrokerConfig cfg;
  std::shared_ptr<prometheus::Registry> prom;
  Metrics metrics;
  Registry registry;
  std::unique_ptr<ExchangeRouter> router;
  std::unique_ptr<ConfigRelay> config;
  std::unique_ptr<AttachService> attach;

  tv1::Registration::AsyncService registration_service;
  tv1::Relay::AsyncService relay_service;
  std::unique_ptr<grpc::Server> registration_server, relay_server;
  // One thread drives both servers' queues: every call runs on the relay
  // queue; the registration queue only tells of new calls.
  std::unique_ptr<gb::Pump> pump;
  std::unique_ptr<grpc::ServerCompletionQueue> registration_q, relay_q;  // until the pump has them
  grpc::ServerCompletionQueue* registration_cq = nullptr;
  grpc::ServerCompletionQueue* relay_cq = nullptr;
  int registration_port = 0, relay_port = 0;
  std::chrono::milliseconds drain_timeout{20000};
  bool draining = false;
  std::chrono::steady_clock::time_point started_at = std::chrono::steady_clock::now();
  std::chrono::steady_clock::duration ready_grace = std::chrono::seconds(10);
  std::map<std::string, int> known_aliases;
  struct AliasState {
    bool routed = false;    // the served config routes APIs to it
    bool unserved = false;  // routed, and no connector here serves it
    prometheus::Gauge* gauge = nullptr;
  };
  std::map<std::string, AliasState> unserved;  // every alias routed so far

  Impl(asio::io_context& io, config::v1::BrokerConfig c, std::shared_ptr<prometheus::Registry> p)
      : ioc(io), ex(io.get_executor()), cfg(std::move(c)), prom(std::move(p)), metrics(*prom) {
    drain_timeout = std::chrono::duration_cast<std::chrono::milliseconds>(config::duration_or(cfg.drain_timeout(), 20s));
    registry.set_observer([this](const Registry& r) { update_gauges(r); });
  }

  // Gauges are set from scratch so aliases that vanish drop to zero.
  void update_gauges(const Registry& r) {
    for (auto& [alias, _] : known_aliases) metrics.connectors.Add({{"alias", alias}}).Set(0);
    const auto attached = r.connectors_per_alias();
    for (auto& [alias, n] : attached) {
      known_aliases[alias] = 1;
      metrics.connectors.Add({{"alias", alias}}).Set(static_cast<double>(n));
    }
    update_unserved(attached);
    if (router) {
      metrics.lanes.Add({{"from", "edge"}}).Set(static_cast<double>(router->lanes(BrokerLane::Side::edge)));
      metrics.lanes.Add({{"from", "connector"}}).Set(static_cast<double>(router->lanes(BrokerLane::Side::connector)));
    }
  }

  // Aliases the served config routes to, against those attached here: an
  // alias no connector serves here (its connectors may all be on another
  // broker) is exported and logged when that changes. Runs on every
  // registry change (sessions and lanes, not exchanges): only a change
  // costs more than a walk over the aliases.
  void update_unserved(const std::map<std::string, std::size_t>& attached) {
    for (auto& [alias, a] : unserved) {
      const auto it = attached.find(alias);
      const bool now = a.routed && (it == attached.end() || it->second == 0);
      if (now == a.unserved) continue;
      a.gauge->Set(now ? 1 : 0);
      if (now) {
        POSTERN_LOG(warn, "alias has no connector attached here; its APIs answer 503 through this broker")
            .kv("alias", alias);
      } else if (a.routed) {
        POSTERN_LOG(info, "alias served again").kv("alias", alias);
      }
      a.unserved = now;
    }
  }

  // A new snapshot is served: which aliases it routes to.
  void routes_changed() {
    std::set<std::string> routed;
    for (const auto& api : config->served()->apis()) {
      if (api.reverse_invoke) routed.insert(api.alias);
    }
    for (const auto& alias : routed) {
      if (!unserved.contains(alias)) {
        auto* g = &metrics.unserved.Add({{"alias", alias}});
        g->Set(0);
        unserved.emplace(alias, AliasState{false, false, g});
      }
    }
    for (auto& [alias, a] : unserved) a.routed = routed.contains(alias);
    update_gauges(registry);
  }

  std::string status_json() const {
    namespace json = boost::json;
    json::object o;
    o["service"] = "broker";
    o["id"] = cfg.id();
    o["version"] = std::string(postern::version());
    std::string why;
    o["ready"] = ready(&why);
    if (!why.empty()) o["ready_because"] = why;
    o["draining"] = draining;
    const auto* served = config ? config->served() : nullptr;
    o["config"] = served ? observability::config_status(served->version(), served->snapshot().source(),
                                                        served->snapshot().digest())
                         : observability::config_status(0, "", "");
    const auto per_alias = registry.connectors_per_alias();
    json::array aliases;
    std::set<std::string> names;
    for (const auto& [alias, a] : unserved) {
      if (a.routed) names.insert(alias);
    }
    for (const auto& [alias, _] : per_alias) names.insert(alias);
    for (const auto& alias : names) {
      const auto it = unserved.find(alias);
      const auto n = per_alias.find(alias);
      json::object a;
      a["alias"] = alias;
      a["routed"] = it != unserved.end() && it->second.routed;
      a["served"] = registry.serves(alias);
      a["connectors"] = n == per_alias.end() ? 0 : n->second;
      aliases.push_back(std::move(a));
    }
    o["aliases"] = std::move(aliases);
    json::array connectors;
    for (const auto& s : registry.all()) {
      json::object c;
      c["id"] = s->connector_id;
      c["identity"] = s->identity;
      json::array as;
      for (const auto& a : s->aliases) as.emplace_back(a);
      c["aliases"] = std::move(as);
      c["lanes"] = s->lanes.size();
      c["in_flight"] = s->in_flight;
      c["draining"] = s->draining;
      c["since"] = observability::iso8601(s->attached_at);
      c["session"] = s->label;
      connectors.push_back(std::move(c));
    }
    o["connectors"] = std::move(connectors);
    return json::serialize(o);
  }

  bool ready(std::string* why) const {
    if (draining) return false;
    if (config && config->served() &&
        std::none_of(unserved.begin(), unserved.end(), [](const auto& u) { return u.second.unserved; })) {
      if (why) *why = "a connector is attached for every alias the config routes to";
      return true;
    }
    if (std::chrono::steady_clock::now() - started_at >= ready_grace) {
      if (why) *why = "the grace period since start is over (ready_grace)";
      return true;
    }
    return false;
  }

  static constexpr std::uint64_t kResponseWindow = 4 << 20;

  void start() {
    config::Checks checks;
    check_config(cfg, checks);
    checks.throw_if_any();
    ready_grace = config::duration_or(cfg.ready_grace(), std::chrono::seconds(10));
    const auto& reg = cfg.registration();
    const std::uint64_t window = cfg.response_window() ? cfg.response_window() : kResponseWindow;
    const std::vector<std::string> key_files(cfg.trusted_config_keys().begin(), cfg.trusted_config_keys().end());
    config = std::make_unique<ConfigRelay>(ex, policy::SnapshotKeys::load(key_files, "trusted_config_keys"),
                                           metrics.config_updates, metrics.config_version);
    config->fanout().on_watchers = [this](std::size_t n) { metrics.config_watchers.Set(static_cast<double>(n)); };
    config->on_served = [this] { routes_changed(); };

    RouterMetrics rm;
    rm.exchanges = &metrics.exchanges_by;
    rm.duration = &metrics.duration;
    rm.in_flight = &metrics.in_flight;
    rm.websocket_sessions = &metrics.ws_sessions;
    rm.bytes_up = &metrics.bytes_up;
    rm.bytes_down = &metrics.bytes_down;
    rm.messages_from_edges = &metrics.messages.Add({{"from", "edge"}});
    rm.messages_from_connectors = &metrics.messages.Add({{"from", "connector"}});
    rm.frames_per_message = &metrics.frames_per_message;
    router = std::make_unique<ExchangeRouter>(
        ex, registry,
        ExchangeRouter::Options{std::chrono::duration_cast<std::chrono::milliseconds>(
                                    config::duration_or(cfg.park_wait(), 5s)),
                                window},
        rm);
    attach = std::make_unique<AttachService>(ex, cfg, registry, *router, *config,
                                             AttachService::Metrics{metrics.refusals, metrics.attaches});

    const auto refresh = gb::refresh_seconds(cfg.file_check_interval());
    registration_server = build(reg.listen(), gb::server_credentials(reg.tls(), "registration", refresh),
                                registration_service, registration_port, registration_q, registration_cq,
                                "registration", /*within_dmz=*/false);
    const auto& relay = cfg.relay();
    std::shared_ptr<grpc::ServerCredentials> relay_creds = grpc::InsecureServerCredentials();
    if (relay.has_tls()) {
      relay_creds = gb::server_credentials(relay.tls(), "relay", refresh);
      if (!relay.tls().client_ca_file().empty()) {
        relay_creds->SetAuthMetadataProcessor(std::make_shared<EdgeIdentityCheck>(
            std::vector<std::string>(cfg.edge_identities().begin(), cfg.edge_identities().end()),
            metrics.refusals.Add({{"reason", "not_an_edge"}})));
      }
    }
    relay_server = build(relay.listen(), relay_creds, relay_service, relay_port, relay_q, relay_cq, "relay",
                         /*within_dmz=*/true);
    std::vector<std::unique_ptr<grpc::CompletionQueue>> side;
    side.push_back(std::move(registration_q));
    pump = std::make_unique<gb::Pump>(std::move(relay_q), "cq-broker", std::move(side));

    asio::co_spawn(ex, accept_attach(), asio::detached);
    asio::co_spawn(ex, accept_lanes(BrokerLane::Side::connector), asio::detached);
    asio::co_spawn(ex, accept_lanes(BrokerLane::Side::edge), asio::detached);
    asio::co_spawn(ex,
                   config->fanout().accept([this](grpc::ServerContext* ctx, policy::v1::WatchRequest* req,
                                                  grpc::ServerAsyncWriter<policy::v1::SignedSnapshot>* w,
                                                  void* tag) {
                     relay_service.RequestWatchConfig(ctx, req, w, relay_cq, relay_cq, tag);
                   }),
                   asio::detached);
    asio::co_spawn(ex,
                   watch_files(key_files, refresh, [this, key_files] {
                     config->reload_keys(key_files);
                     return true;
                   }, &draining),
                   asio::detached);
  }

  std::unique_ptr<grpc::Server> build(const std::string& listen, std::shared_ptr<grpc::ServerCredentials> creds,
                                      grpc::Service& service, int& port,
                                      std::unique_ptr<grpc::ServerCompletionQueue>& q,
                                      grpc::ServerCompletionQueue*& cq, const char* name, bool within_dmz) {
    grpc::ServerBuilder b;
    b.AddListeningPort(listen, creds, &port);
    b.RegisterService(&service);
    gb::apply_server_args(b);
    if (within_dmz) gb::apply_dmz_link_server_args(b);
    b.SetMaxReceiveMessageSize(4 * 1024 * 1024);
    q = b.AddCompletionQueue();
    cq = q.get();
    auto server = b.BuildAndStart();
    if (!server || port == 0) {
      throw std::runtime_error(std::string(name) + " port: cannot listen on " + listen +
                               " (address in use, bad address or bad TLS material)");
    }
    POSTERN_LOG(info, "listening")
        .kv("listener", name)
        .kv("address", listen.substr(0, listen.rfind(':')))
        .kv("port", port);
    return server;
  }

  asio::awaitable<void> accept_attach() {
    for (;;) {
      auto call = std::make_unique<AttachService::AttachCall>();
      const bool ok = co_await gb::op([&](void* tag) {
        registration_service.RequestAttach(&call->ctx, &call->stream, relay_cq, registration_cq, tag);
      });
      if (!ok) co_return;
      asio::co_spawn(ex, attach->serve_attach(std::move(call)), asio::detached);
    }
  }

  asio::awaitable<void> accept_lanes(BrokerLane::Side side) {
    for (;;) {
      auto io = std::make_unique<tunnel::ServerLaneIo>();
      const bool ok = co_await gb::op([&](void* tag) {
        if (side == BrokerLane::Side::edge) {
          relay_service.RequestLane(&io->context(), &io->stream(), relay_cq, relay_cq, tag);
        } else {
          registration_service.RequestLane(&io->context(), &io->stream(), relay_cq, registration_cq, tag);
        }
      });
      if (!ok) co_return;
      metrics.lanes_opened.Add({{"from", side == BrokerLane::Side::edge ? "edge" : "connector"}}).Increment();
      if (side == BrokerLane::Side::connector) {
        asio::co_spawn(ex, attach->serve_lane(std::move(io)), asio::detached);
      } else {
        asio::co_spawn(ex, serve_edge_lane(std::move(io)), asio::detached);
      }
    }
  }

  asio::awaitable<void> serve_edge_lane(std::unique_ptr<tunnel::ServerLaneIo> io) {
    const auto ids = peer_identities(io->context());
    const std::string who = ids.empty() ? "edge " + io->context().peer() : ids.front();
    BrokerLane lane(*router, BrokerLane::Side::edge, std::move(io), who);
    update_gauges(registry);
    if (draining) lane.drain();
    co_await lane.run();
    update_gauges(registry);
  }

  // ------------------------------------------------------------ drain

  static constexpr std::chrono::seconds kShutdownDeadline{2};

  asio::awaitable<void> drain() {
    draining = true;
    attach->drain();
    router->drain();
    config->fanout().close();
    POSTERN_LOG(info, "broker draining").kv("in_flight", static_cast<std::uint64_t>(router->in_flight()));
    co_await router->idle().wait_for(drain_timeout);
    // The last responses may still be queued on the edges' lanes: they go,
    // then each lane ends (bounded). What outlived the wait is cut; the
    // connectors learn by their Attach streams' end and try again until a
    // broker answers at this address.
    for (auto& s : registry.all()) registry.drain(s);
    router->close_lanes();
    {
      asio::steady_timer tick(ex);
      const auto until = std::chrono::steady_clock::now() + kShutdownDeadline;
      while (router->lanes_running() > 0 &&
             std::chrono::steady_clock::now() < until) {
        tick.expires_after(10ms);
        co_await tick.async_wait(use_nothrow);
      }
    }
    router->abort_lanes();
    co_await attach->end_attaches(kShutdownDeadline);
    // Server::Shutdown blocks until calls end; run it off the io thread
    // while this thread keeps serving the completions it needs.
    Event stopped(ex);
    const auto deadline = std::chrono::system_clock::now() + kShutdownDeadline;
    std::thread t([this, &stopped, deadline] {
      relay_server->Shutdown(deadline);
      registration_server->Shutdown(deadline);
      asio::post(ex, [&stopped] { stopped.set(); });
    });
    co_await stopped.wait();
    t.join();
    if (std::chrono::system_clock::now() >= deadline) {
      POSTERN_LOG(warn, "calls still open at the shutdown deadline were cancelled")
          .kv("deadline_ms", static_cast<std::uint64_t>(
                                 std::chrono::duration_cast<std::chrono::milliseconds>(kShutdownDeadline).count()));
    }
    pump->shutdown();
  }
};

Broker::Broker(asio::io_context& ioc, config::v1::BrokerConfig config, std::shared_ptr<prometheus::Registry> metrics)
    : impl_(std::make_unique<Impl>(ioc, std::move(config), std::move(metrics))) {}
Broker::~Broker() = default;
void Broker::start() { impl_->start(); }
bool Broker::ready(std::string* why) const { return impl_->ready(why); }
asio::awaitable<void> Broker::drain() { return impl_->drain(); }
int Broker::registration_port() const { return impl_->registration_port; }
int Broker::relay_port() const { return impl_->relay_port; }

std::string Broker::status_json() const { return impl_->status_json(); }

}  // namespace postern::broker
