#include "connector/connector.hpp"

#include <grpcpp/grpcpp.h>
#include <prometheus/registry.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <algorithm>
#include <map>
#include <set>

#include "common/config/checks.hpp"
#include "common/config/yaml_proto.hpp"
#include "common/event.hpp"
#include "common/file_watch.hpp"
#include "common/grpc/bridge.hpp"
#include "common/grpc/channel.hpp"
#include "common/grpc/snapshot_watcher.hpp"
#include "common/grpc/transform_client.hpp"
#include "common/net/http_client.hpp"
#include "common/net/tls.hpp"
#include "common/observability/log.hpp"
#include "common/policy/enforcement.hpp"
#include "common/policy/signed_snapshot.hpp"
#include "common/policy/ws_policies.hpp"
#include "connector/broker_link.hpp"
#include "connector/config_check.hpp"
#include "connector/exchange_handler.hpp"
#include "connector/metrics.hpp"
#include "postern/policy/v1/policy.grpc.pb.h"

namespace postern::connector {

namespace pv1 = policy::v1;
namespace gb = grpc_bridge;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
// A first link that failed this many attaches in a row no longer holds
// back another link through a load-balanced address (grow_through()).
constexpr int kAttachesBeforeGrowth = 3;

struct Connector::Impl {
  asio::io_context& ioc;
  asio::any_io_executor ex;
  config::v1::ConnectorConfig cfg;
  std::shared_ptr<prometheus::Registry> prom;
  Metrics metrics;
  net::HttpClient http;
  std::map<std::string, net::Origin> origins;  // by alias
  std::shared_ptr<grpc::ChannelCredentials> creds;
  std::unique_ptr<gb::Pump> pump;
  // By target ("ipv4:a.b.c.d:port"), and "target#n" for the further links
  // a load-balanced address gets (grow_through()).
  std::map<std::string, std::unique_ptr<BrokerLink>> links;
  std::uint32_t told_brokers = 0;  // the latest Welcome.broker_count
  Event resolve_now{ex};           // a link lost its broker: resolve again soon
  static constexpr auto kMinResolveGap = std::chrono::seconds(1);
  bool draining = false;
  std::chrono::seconds file_check_interval{10};

  // Policies: the policy service's current snapshot, compiled, and the
  // signed bytes it came in (relayed to brokers unchanged).
  std::shared_ptr<const policy::Catalog> catalog;
  std::shared_ptr<const pv1::SignedSnapshot> catalog_wire;
  std::shared_ptr<const policy::SnapshotKeys> trusted_keys;
  std::unique_ptr<gb::SnapshotWatcher> policy_watch;
  std::unique_ptr<pv1::Policy::Stub> policy_stub;
  std::unique_ptr<policy::Enforcement> enforcement;
  gb::TransformClient transforms{ex};
  std::unique_ptr<ExchangeHandler> handler;

  BrokerLink::Settings link_settings;
  Clock::duration drain_timeout;
  Clock::duration resolve_interval;

  Impl(asio::io_context& io, config::v1::ConnectorConfig c, std::shared_ptr<prometheus::Registry> p)
      : ioc(io), ex(io.get_executor()), cfg(std::move(c)), prom(std::move(p)), metrics(*prom), http(ex) {
    drain_timeout = config::duration_or(cfg.drain_timeout(), 20s);
    resolve_interval = config::duration_or(cfg.resolve_interval(), 30s);
    link_settings.connector_id = cfg.id();
    for (const auto& [alias, _] : cfg.aliases()) link_settings.aliases.push_back(alias);
    link_settings.capacity = cfg.max_concurrency() ? cfg.max_concurrency() : 10000;
    link_settings.lanes = cfg.lanes() ? cfg.lanes() : 2;
    link_settings.connect_timeout = config::duration_or(cfg.connect_timeout(), gb::kConnectTimeout);
    link_settings.reconnect_max = config::duration_or(cfg.reconnect_max(), 1s);
    link_settings.server_name = cfg.tls().server_name();
    link_settings.lane_options.receive_window = cfg.receive_window() ? cfg.receive_window() : (4u << 20);
    link_settings.lane_options.max_exchanges = link_settings.capacity;
    link_settings.lane_options.credit_wait = &metrics.credit_wait;
  }

  void start() {
    config::Checks checks;
    check_config(cfg, checks);
    checks.throw_if_any();
    metrics.brokers_expected.Set(static_cast<double>(wanted_brokers()));
    const auto& t = cfg.tls();
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
        throw std::runtime_error("aliases[" + alias + "].url: " + e.what());
      }
    }
    pump = std::make_unique<gb::Pump>(std::make_unique<grpc::CompletionQueue>(), "cq-client");
    enforcement = std::make_unique<policy::Enforcement>("connector", *prom, cfg.invocation_log_file());
    handler = std::make_unique<ExchangeHandler>(
        ex, ExchangeHandler::Deps{cfg.id(), origins, catalog, http, *enforcement, transforms, metrics,
                                  cfg.max_ws_message_bytes() ? cfg.max_ws_message_bytes() : (16u << 20),
                                  link_settings.capacity});
    if (!cfg.policy().address().empty()) {
      const std::vector<std::string> key_files(cfg.trusted_config_keys().begin(), cfg.trusted_config_keys().end());
      trusted_keys = policy::SnapshotKeys::load(key_files, "trusted_config_keys");
      asio::co_spawn(ex,
                     watch_files(key_files, file_check_interval, [this, key_files] { return reload_keys(key_files); },
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
    policy_watch = std::make_unique<gb::SnapshotWatcher>(ex, "policy", pc.address(), cfg.id());
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
    for (auto& [_, l] : links) l->config_changed();
  }

  // New trusted keys: a snapshot no longer signed by one of them is dropped
  // (green policies then refuse until a trusted one comes).
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
      asio::co_spawn(ex,
                     watch_files({origin.ca_file}, file_check_interval,
                                 [this, alias = alias] {
                                   auto& o = origins.at(alias);
                                   try {
                                     o.tls_context = net::make_client_tls(o.ca_file, "aliases." + alias + ".ca_file");
                                     POSTERN_LOG(info, "native CA bundle reloaded")
                                         .kv("alias", alias)
                                         .kv("ca_file", o.ca_file);
                                   } catch (const std::exception& e) {
                                     POSTERN_LOG(error, "native CA bundle not reloaded; the old one stays")
                                         .kv("alias", alias)
                                         .kv("error", e.what());
                                   }
                                   return true;
                                 },
                                 &draining),
                     asio::detached);
    }
  }

  // ------------------------------------------------------------ brokers

  asio::awaitable<void> resolve_loop() {
    asio::ip::tcp::resolver resolver(ex);
    asio::steady_timer timer(ex);
    while (!draining) {
      // Links wound down since the last pass go first, so that an address
      // back in DNS gets a fresh link in this pass.
      forget_stopped_links();
      resolve_now.reset();
      metrics.broker_lookups.Increment();
      bool any = false;
      std::set<std::string> seen;
      for (const auto& b : cfg.brokers()) {
        const auto colon = b.rfind(':');
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
          if (!links.contains(target)) add_link(b, host, target, target);
        }
      }
      // Brokers gone from DNS are detached; never the last ones if DNS is
      // merely failing.
      if (any) {
        for (auto& [key, link] : links) {
          if (!seen.contains(link->target()) && !link->stopping()) {
            POSTERN_LOG(info, "broker address gone").kv("broker", link->name()).kv("target", link->target());
            link->stop();
          }
        }
      }
      // Again after resolve_interval, or soon after a link lost its broker
      // (it may have moved), at most every kMinResolveGap.
      const auto resolved_at = Clock::now();
      co_await resolve_now.wait_for(any ? resolve_interval : Clock::duration(2s));
      if (const auto since = Clock::now() - resolved_at; since < kMinResolveGap) {
        timer.expires_after(kMinResolveGap - since);
        co_await timer.async_wait(use_nothrow);
      }
    }
  }

  // Links that were stopped and have wound down (an address that left DNS,
  // a further link no longer needed); an address that comes back gets a
  // fresh link.
  void forget_stopped_links() {
    std::erase_if(links, [](const auto& kv) { return kv.second->stopping() && kv.second->stopped().is_set(); });
  }

  // ------------------------------------------------------------ load-balanced brokers

  // How many distinct brokers to be attached to: configured, or what the
  // brokers say (at least one).
  std::uint32_t wanted_brokers() const {
    return std::max<std::uint32_t>(1, cfg.expected_brokers() ? cfg.expected_brokers() : told_brokers);
  }

  // The distinct brokers attached links hold (through `target` only, if
  // given). A broker that names no instance (older brokers) counts by link.
  std::set<std::string> attached_instances(const std::string* target = nullptr) const {
    std::set<std::string> out;
    for (const auto& [key, l] : links) {
      if (!l->attached() || (target && l->target() != *target)) continue;
      out.insert(l->broker_instance().empty() ? "link:" + key : l->broker_instance());
    }
    return out;
  }

  // A broker welcomed `link`. When another link of the same address holds
  // that broker already (behind a load balancer), `link` dials again on a
  // new connection while brokers are missing: that is how a broker that
  // restarted is found again. Once enough brokers are held, a further link
  // stops and an address's first link stays where it is. Links of
  // different addresses are never compared (two names for one broker are
  // the operator's choice).
  bool on_welcome(BrokerLink& link, const std::string& instance, std::uint32_t count) {
    if (count) told_brokers = std::min<std::uint32_t>(count, 64);
    metrics.brokers_expected.Set(static_cast<double>(wanted_brokers()));
    const bool further = links.contains(link.target()) && links.at(link.target()).get() != &link;
    if (!instance.empty() && attached_instances(&link.target()).contains(instance)) {
      const bool enough = attached_instances().size() >= wanted_brokers();
      if (!enough) return false;  // dial again
      if (further) {
        link.stop();
        return false;
      }
    }
    asio::post(ex, [this, target = link.target()] { grow_through(target); });
    return true;
  }

  // Behind one load balancer, one address reaches several brokers, each
  // connection whichever the balancer picks: while fewer distinct brokers
  // than wanted are held, and every address has its first link attached
  // (with one address per broker, as a headless Service resolves, those
  // are the brokers), one more link dials `target`. It keeps dialling
  // until it reaches a broker no other link holds.
  void grow_through(const std::string& target) {
    if (draining || !links.contains(target)) return;
    const auto held = attached_instances();
    if (held.size() >= wanted_brokers()) return;
    for (const auto& [key, l] : links) {
      if (l->stopping()) continue;
      // An address's first link still attaching (its broker may be one
      // of those wanted); one that keeps failing does not hold growth up.
      if (key == l->target() && !l->attached() && l->failed_attaches() < kAttachesBeforeGrowth) return;
      if (l->target() != target) continue;
      if (!l->attached()) return;  // a link of this address is dialling already
    }
    if (attached_instances(&target).size() >= wanted_brokers()) return;
    const auto& first = *links.at(target);
    std::string key;
    for (std::size_t n = 2; key.empty() || links.contains(key); ++n) key = target + "#" + std::to_string(n);
    POSTERN_LOG(info, "dialling the broker address again for another broker")
        .kv("broker", first.name())
        .kv("target", target)
        .kv("brokers_held", static_cast<std::uint64_t>(held.size()))
        .kv("brokers_expected", static_cast<std::uint64_t>(wanted_brokers()));
    add_link(first.name(), first_host(first.name()), target, key);
  }

  void grow_everywhere() {
    std::set<std::string> targets;
    for (const auto& [key, l] : links) {
      if (key == l->target() && l->attached()) targets.insert(key);
    }
    for (const auto& t : targets) grow_through(t);
  }

  static std::string first_host(const std::string& name) {
    std::string host = name.substr(0, name.rfind(':'));
    if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
    return host;
  }

  void add_link(const std::string& name, const std::string& host, const std::string& target,
                const std::string& key) {
    BrokerLink::Hooks hooks;
    hooks.serve = [this](std::shared_ptr<tunnel::Exchange> x, tunnel::v1::RequestHead&& head) {
      handler->serve(std::move(x), std::move(head));
    };
    hooks.config = [this] { return catalog_wire; };
    hooks.draining = [this] { return draining; };
    hooks.attached_changed = [this, target] {
      update_attached_gauge();
      // A link that lost its broker: another may be needed to make up.
      asio::post(ex, [this, target] { grow_through(target); });
    };
    hooks.lost = [this] {
      resolve_now.set();
      // A first link that keeps failing may have held growth up.
      asio::post(ex, [this] { grow_everywhere(); });
    };
    hooks.welcomed = [this](BrokerLink& l, const std::string& instance, std::uint32_t count) {
      return on_welcome(l, instance, count);
    };
    auto link = std::make_unique<BrokerLink>(ex, name, host, target, creds, pump->cq(), link_settings,
                                             std::move(hooks), metrics);
    auto* l = link.get();
    links.emplace(key, std::move(link));
    POSTERN_LOG(info, "broker link added").kv("broker", name).kv("target", target);
    l->start();
  }

  // Distinct brokers held (two links to one broker count once).
  void update_attached_gauge() {
    metrics.brokers_attached.Set(static_cast<double>(attached_instances().size()));
  }

  // ------------------------------------------------------------ drain

  asio::awaitable<void> drain() {
    draining = true;
    if (policy_watch) policy_watch->stop();
    handler->close_sessions(1001, "connector draining");
    POSTERN_LOG(info, "connector draining").kv("in_flight", static_cast<std::uint64_t>(handler->in_flight()));
    // The brokers hand this connector nothing new; what is in flight runs
    // to completion (bounded).
    for (auto& [_, l] : links) {
      if (l->attached()) {
        l->request_drain();
      } else {
        l->stop();
      }
    }
    // Exchanges the brokers sent before they had the drain may still be on
    // the way: wait for every lane's drain mark, then for what is in flight.
    const auto until = Clock::now() + drain_timeout;
    asio::steady_timer tick(ex);
    auto marked = [this] {
      return std::all_of(links.begin(), links.end(),
                         [](const auto& l) { return !l.second->attached() || l.second->lanes_drained(); });
    };
    while (!marked() && Clock::now() < until) {
      tick.expires_after(10ms);
      co_await tick.async_wait(use_nothrow);
    }
    co_await handler->idle().wait_for(until - Clock::now());
    // The last responses may still be queued on the lanes: they go, then
    // the lanes end (bounded), then the Attach streams.
    for (auto& [_, l] : links) l->close_lanes();
    const auto lanes_until = Clock::now() + 2s;
    auto lanes_left = [this] {
      return std::any_of(links.begin(), links.end(), [](const auto& l) { return l.second->lanes_up() > 0; });
    };
    while (lanes_left() && Clock::now() < lanes_until) {
      tick.expires_after(10ms);
      co_await tick.async_wait(use_nothrow);
    }
    for (auto& [_, l] : links) l->stop();
    for (auto& [_, l] : links) co_await l->stopped().wait_for(5s);
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
    if (l->attached()) return true;
  }
  return false;
}

}  // namespace postern::connector
