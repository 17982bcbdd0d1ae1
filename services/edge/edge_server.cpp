#include "edge/edge_server.hpp"

#include <boost/json.hpp>

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include "common/config/checks.hpp"
#include "common/config/yaml_proto.hpp"
#include "common/event.hpp"
#include "common/file_watch.hpp"
#include "common/grpc/transform_client.hpp"
#include "common/net/http_client.hpp"
#include "common/net/ws_relay.hpp"
#include "common/observability/log.hpp"
#include "common/observability/status_page.hpp"
#include "common/policy/enforcement.hpp"
#include "common/policy/signed_snapshot.hpp"
#include "common/version.hpp"
#include "edge/config_check.hpp"
#include "edge/http_connection.hpp"
#include "edge/in_flight.hpp"
#include "edge/listener.hpp"
#include "edge/metrics.hpp"
#include "edge/relay_client.hpp"
#include "edge/request_handler.hpp"
#include "edge/router.hpp"
#include "edge/settings.hpp"
#include "edge/upstream.hpp"
#include "edge/websocket_upgrade.hpp"

namespace postern::edge {

namespace pv1 = policy::v1;
using namespace std::chrono_literals;

namespace {

// How long a draining edge waits for the first request of connections it
// accepted before the drain (or took from the listener's backlog at the
// drain) before closing the silent ones.
constexpr auto kDrainFirstRequestGrace = 1s;

}  // namespace

struct EdgeServer::Impl {
  asio::any_io_executor ex;
  config::v1::EdgeConfig cfg;
  std::shared_ptr<prometheus::Registry> prom;
  Metrics metrics;
  Settings settings;
  bool draining = false;

  // Policies: the newest snapshot from the broker, compiled. A request keeps
  // the version it started with.
  std::shared_ptr<const policy::Catalog> catalog;
  // The public keys a snapshot must be signed by (trusted_config_keys).
  std::shared_ptr<const policy::SnapshotKeys> trusted_keys;
  std::shared_ptr<const pv1::SignedSnapshot> catalog_wire;  // the signed bytes `catalog` came from
  prometheus::Family<prometheus::Counter>& config_updates;
  prometheus::Gauge& config_version;
  bool config_received = false;
  Event first_config;  // set with config_received
  // Peers whose X-Forwarded-For and Forwarded are believed (trusted_proxies).
  policy::IpRanges trusted_proxies;
  std::chrono::seconds file_check_interval{10};

  net::HttpClient http;
  grpc_bridge::TransformClient transforms;
  net::WsSessions ws_sessions;  // open WebSocket sessions, so a drain can close them with 1001
  InFlight in_flight;
  WaitingConnections waiting;
  // Made by start(), in this order.
  std::unique_ptr<Router> router;
  std::unique_ptr<policy::Enforcement> enforcement;
  std::unique_ptr<RelayClient> relay;
  std::unique_ptr<Upstreams> upstreams;
  std::unique_ptr<WebSocketUpgrade> websocket;
  std::unique_ptr<RequestHandler> handler;
  std::unique_ptr<HttpConnections> connections;
  std::unique_ptr<Listeners> listeners;

  Impl(asio::io_context& io, config::v1::EdgeConfig c, std::shared_ptr<prometheus::Registry> p)
      : ex(io.get_executor()), cfg(std::move(c)), prom(std::move(p)), metrics(*prom), settings(Settings::from(cfg)),
        config_updates(prometheus::BuildCounter()
                           .Name("postern_edge_config_updates_total")
                           .Help("Policy snapshots received from the broker, by result: applied, unchanged, empty, "
                                 "untrusted (no valid signature by a trusted key), invalid")
                           .Register(*prom)),
        config_version(prometheus::BuildGauge()
                           .Name("postern_edge_config_version")
                           .Help("Version of the policy snapshot in force (0: none)")
                           .Register(*prom)
                           .Add({})),
        first_config(ex), http(ex), transforms(ex), in_flight(ex, metrics.in_flight), waiting(ex) {}

  void start() {
    config::Checks checks;
    check_config(cfg, checks);
    checks.throw_if_any();
    try {
      router = std::make_unique<Router>(cfg.apis(), cfg.default_alias());
    } catch (const std::invalid_argument& e) {
      throw std::runtime_error(e.what());
    }
    const std::vector<std::string> key_files(cfg.trusted_config_keys().begin(), cfg.trusted_config_keys().end());
    trusted_keys = policy::SnapshotKeys::load(key_files, "trusted_config_keys");
    for (int i = 0; i < cfg.trusted_proxies_size(); ++i) {
      if (std::string why = trusted_proxies.add(cfg.trusted_proxies(i)); !why.empty()) {
        throw std::runtime_error("trusted_proxies[" + std::to_string(i) + "]: " + why);
      }
    }
    file_check_interval = std::chrono::duration_cast<std::chrono::seconds>(
        config::duration_or(cfg.file_check_interval(), std::chrono::seconds(10)));
    if (file_check_interval < 1s) file_check_interval = 1s;
    enforcement = std::make_unique<policy::Enforcement>("edge", *prom, cfg.invocation_log_file());
    relay = std::make_unique<RelayClient>(ex, cfg.broker(), prom.get(), file_check_interval);
    asio::co_spawn(ex,
                   relay->watch_config(
                       cfg.id().empty() ? "edge" : cfg.id(),
                       [this] { return catalog ? catalog->version() : std::uint64_t{0}; },
                       [this](policy::v1::SignedSnapshot&& s) { apply_snapshot(std::move(s)); }),
                   asio::detached);
    asio::co_spawn(ex, watch_files(key_files, file_check_interval, [this, key_files] { return reload_keys(key_files); },
                                   &draining),
                   asio::detached);
    make_roles();
    listeners->start(cfg.listeners(), file_check_interval, &draining);
    if (!cfg.public_url().empty()) POSTERN_LOG(info, "public url").kv("url", cfg.public_url());
  }

  // The roles a request goes through: listener, connection, request
  // handler (and WebSocket upgrade), upstream.
  void make_roles() {
    upstreams = std::make_unique<Upstreams>(*relay, http);
    websocket = std::make_unique<WebSocketUpgrade>(WebSocketUpgrade::Deps{
        ex, settings, metrics, *upstreams, *enforcement, transforms, ws_sessions, in_flight});
    handler = std::make_unique<RequestHandler>(RequestHandler::Deps{
        settings, metrics, *router, catalog, trusted_proxies, *enforcement, *upstreams, *websocket, draining});
    connections = std::make_unique<HttpConnections>(HttpConnections::Deps{
        ex, settings, metrics, waiting, in_flight, *handler, first_config, draining});
    listeners = std::make_unique<Listeners>(
        ex, [this](asio::ip::tcp::socket s, std::shared_ptr<asio::ssl::context> tls) {
          connections->start(std::move(s), std::move(tls));
        });
  }

  // The broker's current snapshot replaces ours atomically, whatever its
  // version: the broker serves what the green zone holds now, so an edge
  // follows it back as well as forward. Only with a valid signature by a
  // trusted key; one that does not compile is refused, and the current one
  // keeps serving.
  void apply_snapshot(policy::v1::SignedSnapshot&& s) {
    policy::SnapshotOutcome outcome;
    auto got = policy::open_snapshot(*trusted_keys, std::make_shared<const policy::v1::SignedSnapshot>(std::move(s)),
                                     catalog.get(), "broker", outcome);
    config_updates.Add({{"result", policy::outcome_label(outcome)}}).Increment();
    if (!config_received && outcome != policy::SnapshotOutcome::untrusted) {
      config_received = true;
      first_config.set();
      POSTERN_LOG(info, "config received from broker").kv("version", got ? got->catalog->version() : 0);
    }
    if (!got) return;
    catalog = std::move(got->catalog);
    catalog_wire = std::move(got->wire);
    config_version.Set(static_cast<double>(catalog->version()));
  }

  // New trusted keys (a rotation): the snapshot in force must still carry a
  // signature by one of them, or it is dropped (the edge answers 503 until
  // the broker sends one that does).
  bool reload_keys(const std::vector<std::string>& files) {
    try {
      trusted_keys = policy::SnapshotKeys::load(files, "trusted_config_keys");
    } catch (const std::exception& e) {
      POSTERN_LOG(error, "trusted keys not reloaded; the old ones stay").kv("error", e.what());
      return true;
    }
    POSTERN_LOG(info, "trusted keys reloaded").kv("keys", trusted_keys->ids());
    if (catalog && !catalog_wire_trusted()) {
      POSTERN_LOG(warn, "policy snapshot dropped: its signing key is no longer trusted")
          .kv("version", catalog->version());
      catalog.reset();
      catalog_wire.reset();
      config_version.Set(0);
      relay->restart_watch();
    }
    return true;
  }

  bool catalog_wire_trusted() const {
    pv1::Snapshot ignored;
    return catalog_wire && trusted_keys->open(*catalog_wire, ignored).empty();
  }

  // Stops accepting, lets what is in flight finish (bounded), closes idle
  // connections and WebSocket sessions.
  asio::awaitable<void> drain() {
    draining = true;
    relay->stop_watch();
    const std::size_t backlog = listeners->close();
    // New connections get a moment for their first request; then the silent
    // ones are closed like idle ones.
    co_await waiting.drain(kDrainFirstRequestGrace);
    if (backlog > 0) POSTERN_LOG(info, "accepted connections waiting at drain").kv("connections", backlog);
    ws_sessions.stop_all(1001, "server draining");
    co_await in_flight.idle_within(settings.drain_timeout);
    POSTERN_LOG(info, "edge drained").kv("in_flight", static_cast<std::uint64_t>(in_flight.count()));
  }
};

EdgeServer::EdgeServer(asio::io_context& ioc, config::v1::EdgeConfig config,
                       std::shared_ptr<prometheus::Registry> metrics)
    : impl_(std::make_unique<Impl>(ioc, std::move(config), std::move(metrics))) {}
EdgeServer::~EdgeServer() = default;
void EdgeServer::start() { impl_->start(); }
asio::awaitable<void> EdgeServer::drain() { return impl_->drain(); }
bool EdgeServer::ready() const { return impl_->config_received; }

std::string EdgeServer::status_json() const {
  namespace json = boost::json;
  const auto& d = *impl_;
  json::object o;
  o["service"] = "edge";
  o["id"] = d.cfg.id();
  o["version"] = std::string(postern::version());
  o["ready"] = d.config_received;
  o["draining"] = d.draining;
  o["in_flight"] = d.in_flight.count();
  o["config"] = d.catalog ? observability::config_status(d.catalog->version(), d.catalog->snapshot().source(),
                                                         d.catalog->snapshot().digest())
                          : observability::config_status(0, "", "");
  json::array brokers;
  if (d.relay) {
    for (const auto& b : d.relay->brokers()) {
      json::object j;
      j["broker"] = b.name;
      j["address"] = b.target;
      j["lanes_up"] = b.lanes_up;
      j["lanes"] = b.lanes;
      j["exchanges"] = b.exchanges;
      j["draining"] = b.draining;
      j["reachable"] = !b.down;
      j["config_from"] = b.watching;
      brokers.push_back(std::move(j));
    }
  }
  o["brokers"] = std::move(brokers);
  return json::serialize(o);
}

}  // namespace postern::edge
