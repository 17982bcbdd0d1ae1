#include "policy/policy_service.hpp"

#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/message_differencer.h>
#include <grpcpp/grpcpp.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <map>
#include <optional>
#include <thread>

#include "common/config/checks.hpp"
#include "common/config/yaml_proto.hpp"
#include "common/crypto/keys.hpp"
#include "common/event.hpp"
#include "common/file_watch.hpp"
#include "common/grpc/bridge.hpp"
#include "common/grpc/channel.hpp"
#include "common/grpc/snapshot_fanout.hpp"
#include "common/net/tls.hpp"
#include "common/observability/log.hpp"
#include "common/policy/signed_snapshot.hpp"
#include "policy/config_check.hpp"
#include "policy/policy_file.hpp"
#include "postern/policy/v1/policy.grpc.pb.h"

namespace postern::policy_service {

namespace pv1 = policy::v1;
namespace gb = grpc_bridge;
using namespace std::chrono_literals;

namespace {

struct Metrics {
  prometheus::Gauge& version;
  prometheus::Family<prometheus::Counter>& reloads;
  prometheus::Gauge& watchers;
  prometheus::Gauge& apis;
  prometheus::Gauge& applications;
  prometheus::Gauge& last_success;

  explicit Metrics(prometheus::Registry& r)
      : version(prometheus::BuildGauge()
                    .Name("postern_policy_snapshot_version")
                    .Help("Version of the snapshot being served")
                    .Register(r)
                    .Add({})),
        reloads(prometheus::BuildCounter()
                    .Name("postern_policy_reloads_total")
                    .Help("Policy file loads by result: accepted, rejected, unchanged")
                    .Register(r)),
        watchers(prometheus::BuildGauge()
                     .Name("postern_policy_watchers")
                     .Help("Connectors watching for snapshots")
                     .Register(r)
                     .Add({})),
        apis(prometheus::BuildGauge().Name("postern_policy_apis").Help("APIs in the snapshot").Register(r).Add({})),
        applications(prometheus::BuildGauge()
                         .Name("postern_policy_applications")
                         .Help("Applications in the snapshot")
                         .Register(r)
                         .Add({})),
        last_success(prometheus::BuildGauge()
                         .Name("postern_policy_last_reload_success_timestamp_seconds")
                         .Help("When the policy file was last loaded and accepted (Unix time); alert when it is "
                               "older than an edit you made, or reloads_total{result=\"rejected\"} grows")
                         .Register(r)
                         .Add({})) {}
};

// What changed between two snapshots, named: "orders/1.0, chat/1.0".
struct Changes {
  std::string added, removed, changed;
};

template <class Items, class KeyOf>
Changes changes_of(const Items& before, const Items& after, KeyOf key_of) {
  std::map<std::string, const typename Items::value_type*> old_items;
  for (const auto& i : before) old_items[key_of(i)] = &i;
  Changes c;
  auto add = [](std::string& list, const std::string& k) { list += (list.empty() ? "" : ", ") + k; };
  for (const auto& i : after) {
    const std::string k = key_of(i);
    const auto it = old_items.find(k);
    if (it == old_items.end()) {
      add(c.added, k);
    } else {
      if (!google::protobuf::util::MessageDifferencer::Equals(*it->second, i)) add(c.changed, k);
      old_items.erase(it);
    }
  }
  for (const auto& [k, _] : old_items) add(c.removed, k);
  return c;
}

std::uint64_t now_ms() {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count());
}

void json_string(std::string& out, std::string_view s) {
  out += '"';
  log::json_escape(out, s);
  out += '"';
}

void json_strings(std::string& out, const google::protobuf::RepeatedPtrField<std::string>& list) {
  out += '[';
  for (int i = 0; i < list.size(); ++i) {
    if (i) out += ',';
    json_string(out, list[i]);
  }
  out += ']';
}

}  // namespace

struct PolicyService::Impl {
  asio::io_context& ioc;
  asio::any_io_executor ex;
  config::v1::PolicyServiceConfig cfg;
  std::shared_ptr<prometheus::Registry> prom;
  Metrics metrics;
  std::shared_ptr<const policy::Catalog> current;
  std::optional<crypto::SigningKey> signing_key;
  FileStamp last_stamp;
  std::uint64_t last_version = 0;

  pv1::Policy::AsyncService service;
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<gb::Pump> pump;
  grpc::ServerCompletionQueue* cq = nullptr;
  int port = 0;
  bool draining = false;

  grpc_bridge::SnapshotFanout fanout;

  Impl(asio::io_context& io, config::v1::PolicyServiceConfig c, std::shared_ptr<prometheus::Registry> p)
      : ioc(io), ex(io.get_executor()), cfg(std::move(c)), prom(std::move(p)), metrics(*prom),
        fanout(ex, "connector", false) {
    fanout.on_watchers = [this](std::size_t n) { metrics.watchers.Set(static_cast<double>(n)); };
  }

  std::string source() const { return (cfg.id().empty() ? "policy" : cfg.id()) + ":" + cfg.policy_file(); }

  // The version a load gets: its time, kept increasing if the clock went
  // back. It becomes the last version only if the load is published.
  std::uint64_t candidate_version() const { return std::max(now_ms(), last_version + 1); }

  void start() {
    config::Checks checks;
    check_config(cfg, checks, /*policy_file=*/false);  // loaded below, with its errors
    checks.throw_if_any();
    try {
      signing_key = crypto::SigningKey::from_file(cfg.signing_key_file());
    } catch (const std::exception& e) {
      throw std::runtime_error(std::string("signing_key_file: ") + e.what());
    }
    POSTERN_LOG(info, "signing key loaded").kv("file", cfg.signing_key_file()).kv("key", signing_key->key_id());
    last_stamp = stamp_file(cfg.policy_file());
    auto loaded = load_policy_file(cfg.policy_file(), candidate_version(), source());
    if (!loaded.catalog) {
      std::string all = "policy file is invalid:";
      for (const auto& e : loaded.errors) all += "\n  " + e;
      throw std::runtime_error(all);
    }
    publish(std::move(loaded.catalog));
    metrics.reloads.Add({{"result", "accepted"}}).Increment();
    reloaded();

    const auto& l = cfg.listen();
    const auto refresh = gb::refresh_seconds(cfg.file_check_interval());
    std::shared_ptr<grpc::ServerCredentials> creds = grpc::InsecureServerCredentials();
    if (l.has_tls()) creds = gb::server_credentials(l.tls(), "listen", refresh);
    grpc::ServerBuilder b;
    b.AddListeningPort(l.listen(), creds, &port);
    b.RegisterService(&service);
    grpc_bridge::apply_server_args(b);
    auto q = b.AddCompletionQueue();
    cq = q.get();
    server = b.BuildAndStart();
    if (!server || port == 0) {
      throw std::runtime_error("listen: cannot listen on " + l.listen() +
                               " (address in use, bad address or bad TLS material)");
    }
    pump = std::make_unique<gb::Pump>(std::move(q), "cq-policy");
    POSTERN_LOG(info, "listening")
        .kv("listener", "policy")
        .kv("address", l.listen().substr(0, l.listen().rfind(':')))
        .kv("port", port);
    asio::co_spawn(ex,
                   fanout.accept([this](grpc::ServerContext* ctx, pv1::WatchRequest* req,
                                        grpc::ServerAsyncWriter<pv1::SignedSnapshot>* w, void* tag) {
                     service.RequestWatch(ctx, req, w, cq, cq, tag);
                   }),
                   asio::detached);
    asio::co_spawn(ex, reload_loop(), asio::detached);
    asio::co_spawn(ex, watch_files({cfg.signing_key_file()}, refresh, [this] { return reload_signing_key(); }, &draining),
                   asio::detached);
  }

  // A new signing key (a rotation through the Secret) signs the current
  // config again under a new version, so every hop gets it. A file that
  // does not load yet (half written) is retried at the next change.
  bool reload_signing_key() {
    try {
      auto key = crypto::SigningKey::from_file(cfg.signing_key_file());
      if (key.key_id() == signing_key->key_id()) return true;
      POSTERN_LOG(info, "signing key changed")
          .kv("file", cfg.signing_key_file())
          .kv("old_key", signing_key->key_id())
          .kv("key", key.key_id());
      signing_key = std::move(key);
    } catch (const std::exception& e) {
      POSTERN_LOG(error, "signing key not reloaded; the old key keeps signing").kv("error", e.what());
      return true;
    }
    pv1::Snapshot again = current->snapshot();
    again.set_version(candidate_version());
    std::vector<policy::Issue> issues;
    if (auto cat = policy::Catalog::compile(std::move(again), issues)) publish(std::move(cat));
    return true;
  }

  // The policy file was read and taken (changed or not): not a new
  // signing key, which also publishes.
  void reloaded() { metrics.last_success.Set(static_cast<double>(now_ms()) / 1000.0); }

  void publish(std::shared_ptr<const policy::Catalog> cat) {
    const auto previous = std::move(current);
    current = std::move(cat);
    last_version = current->version();
    const auto& s = current->snapshot();
    metrics.version.Set(static_cast<double>(s.version()));
    metrics.apis.Set(s.config().apis_size());
    metrics.applications.Set(s.config().applications_size());
    for (const auto& w : current->warnings()) {
      POSTERN_LOG(warn, "policy file warning").kv("file", cfg.policy_file()).kv("warning", w);
    }
    POSTERN_LOG(info, "policy snapshot published")
        .kv("version", s.version())
        .kv("digest", s.digest().substr(0, 16))
        .kv("key", signing_key->key_id())
        .kv("apis", s.config().apis_size())
        .kv("applications", s.config().applications_size());
    if (previous && previous->snapshot().digest() != s.digest()) {
      const auto& was = previous->snapshot().config();
      const auto apis = changes_of(was.apis(), s.config().apis(),
                                   [](const pv1::Api& a) { return a.name() + "/" + a.version(); });
      const auto apps = changes_of(was.applications(), s.config().applications(),
                                   [](const pv1::Application& a) { return a.name(); });
      POSTERN_LOG(info, "policy changes")
          .kv("version", s.version())
          .kv("apis_added", apis.added)
          .kv("apis_removed", apis.removed)
          .kv("apis_changed", apis.changed)
          .kv("applications_added", apps.added)
          .kv("applications_removed", apps.removed)
          .kv("applications_changed", apps.changed);
    }
    fanout.publish(std::make_shared<const pv1::SignedSnapshot>(policy::sign_snapshot(s, *signing_key)), s.version());
  }

  asio::awaitable<void> reload_loop() {
    asio::steady_timer timer(ex);
    const auto interval = config::duration_or(cfg.reload_interval(), 500ms);
    while (!draining) {
      timer.expires_after(interval);
      co_await timer.async_wait(use_nothrow);
      if (draining) break;
      const FileStamp now = stamp_file(cfg.policy_file());
      if (now == last_stamp) continue;
      last_stamp = now;
      auto loaded = load_policy_file(cfg.policy_file(), candidate_version(), source());
      if (!loaded.catalog) {
        metrics.reloads.Add({{"result", "rejected"}}).Increment();
        std::string all;
        for (const auto& e : loaded.errors) all += (all.empty() ? "" : "\n") + e;
        POSTERN_LOG(error, "policy file rejected; the last good version keeps serving")
            .kv("file", cfg.policy_file())
            .kv("serving_version", current->version())
            .kv("errors", all);
        continue;
      }
      if (loaded.catalog->snapshot().digest() == current->snapshot().digest()) {
        metrics.reloads.Add({{"result", "unchanged"}}).Increment();
        reloaded();
        continue;
      }
      metrics.reloads.Add({{"result", "accepted"}}).Increment();
      publish(std::move(loaded.catalog));
      reloaded();
    }
  }

  asio::awaitable<void> drain() {
    draining = true;
    fanout.close();
    Event stopped(ex);
    std::thread t([this, &stopped] {
      server->Shutdown(std::chrono::system_clock::now() + 2s);
      asio::post(ex, [&stopped] { stopped.set(); });
    });
    co_await stopped.wait();
    t.join();
    pump->shutdown();
  }

  // ------------------------------------------------------------ listings

  std::string apis_json() const {
    std::string out = "{\"version\":" + std::to_string(current->version()) + ",\"apis\":[";
    bool first = true;
    for (const auto& api : current->apis()) {
      pv1::Api copy = *api.def;
      // Public keys only, but long: the listing names the file instead.
      copy.mutable_policies()->mutable_identify()->mutable_jwt()->clear_jwks();
      if (!api.def->policies().has_identify()) copy.mutable_policies()->clear_identify();
      if (!api.def->has_policies()) copy.clear_policies();
      std::string one = config::to_json(copy);
      // Resolved fields, so a user sees what every hop sees.
      one.pop_back();
      one += ",\"resolved_base_path\":";
      json_string(one, api.base_path);
      one += ",\"enforced_by\":";
      json_string(one, api.green ? "connector" : "edge");
      one += '}';
      if (!first) out += ',';
      first = false;
      out += one;
    }
    return out + "]}\n";
  }

  std::string applications_json() const {
    std::string out = "{\"version\":" + std::to_string(current->version()) + ",\"applications\":[";
    const auto& apps = current->snapshot().config().applications();
    for (int i = 0; i < apps.size(); ++i) {
      const auto& a = apps[i];
      if (i) out += ',';
      out += "{\"name\":";
      json_string(out, a.name());
      out += ",\"description\":";
      json_string(out, a.description());
      out += ",\"apis\":";
      json_strings(out, a.apis());
      out += ",\"identifiers\":{\"api_keys\":" + std::to_string(a.api_keys_size()) + ",\"ip_ranges\":";
      json_strings(out, a.ip_ranges());
      out += ",\"hostnames\":";
      json_strings(out, a.hostnames());
      out += ",\"jwt_subjects\":";
      json_strings(out, a.jwt_subjects());
      out += ",\"basic_users\":[";
      for (int k = 0; k < a.basic_size(); ++k) {
        if (k) out += ',';
        json_string(out, a.basic(k).username());
      }
      out += "]}}";
    }
    return out + "]}\n";
  }
};

PolicyService::PolicyService(asio::io_context& ioc, config::v1::PolicyServiceConfig config,
                             std::shared_ptr<prometheus::Registry> metrics)
    : impl_(std::make_unique<Impl>(ioc, std::move(config), std::move(metrics))) {}
PolicyService::~PolicyService() = default;
void PolicyService::start() { impl_->start(); }
asio::awaitable<void> PolicyService::drain() { return impl_->drain(); }
int PolicyService::port() const { return impl_->port; }
std::string PolicyService::apis_json() const { return impl_->apis_json(); }
std::string PolicyService::applications_json() const { return impl_->applications_json(); }

}  // namespace postern::policy_service
