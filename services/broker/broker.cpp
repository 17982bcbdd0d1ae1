#include "broker/broker.hpp"

#include <grpcpp/grpcpp.h>
#include <grpcpp/security/auth_metadata_processor.h>
#include <grpcpp/security/server_credentials.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <set>

#include "broker/registry.hpp"
#include "common/config/yaml_proto.hpp"
#include "common/error.hpp"
#include "common/event.hpp"
#include "common/grpc/bridge.hpp"
#include "common/grpc/channel.hpp"
#include "common/grpc/mux.hpp"
#include "common/grpc/snapshot_fanout.hpp"
#include "common/policy/catalog.hpp"
#include "common/policy/signed_snapshot.hpp"
#include "common/file_watch.hpp"
#include "common/net/tls.hpp"
#include "common/observability/log.hpp"
#include "postern/tunnel/v1/tunnel.grpc.pb.h"

namespace postern::broker {

namespace tv1 = tunnel::v1;
namespace gb = grpc_bridge;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using FrameStream = grpc::ServerAsyncReaderWriter<tv1::Frame, tv1::Frame>;
using AttachStream = grpc::ServerAsyncReaderWriter<tv1::BrokerMessage, tv1::ConnectorMessage>;

// One Sessions stream: an edge's (Relay.Sessions) or a connector's
// (Registration.Sessions), with the routes of the sessions it carries.
struct MuxRoute;
struct SessionsCarrier {
  SessionsCarrier(asio::any_io_executor ex, bool from_edge) : out(std::move(ex)), edge(from_edge) {}
  grpc::ServerContext ctx;
  FrameStream stream{&ctx};
  grpc_bridge::Outbox out;
  const bool edge;
  std::shared_ptr<Session> attach;  // a connector's: its Attach session
  std::map<std::uint64_t, std::shared_ptr<MuxRoute>> routes;  // by the session's id on this stream
  std::uint64_t next_id = 1;  // a connector's: the id of the next session the broker opens on it
  bool over = false;
};

// A WebSocket session routed from an edge's Sessions stream to a
// connector's.
struct MuxRoute {
  explicit MuxRoute(asio::any_io_executor ex) : wake(std::move(ex)) {}
  SessionsCarrier* edge = nullptr;
  std::uint64_t edge_id = 0;
  SessionsCarrier* connector = nullptr;  // null while a connector is looked for
  std::uint64_t connector_id = 0;
  std::shared_ptr<Session> session;  // counted in its in_flight
  std::string alias, request_id;
  std::chrono::steady_clock::time_point started;
  int phase = 0;  // of the connector's frames (out_of_order)
  // Message bytes each side may still send: the window the other side
  // announced, plus the credit it has returned since (none: not paced).
  // Counted as the sender counts (SendCredit): it waits while it has none
  // left, and a piece larger than what is left still goes, taking the
  // count below zero. So a piece that arrives when this is not above zero
  // breaks the protocol; the broker's view is never behind the sender's,
  // since the credit passes through here first.
  std::optional<std::int64_t> edge_may_send, connector_may_send;
  std::size_t refusal_bytes = 0;  // of a refusal's body
  bool edge_closed = false, connector_closed = false;  // each side's ws_close seen
  bool broker_closed = false;  // a drain closed both sides: their messages are dropped
  bool abandoned = false;      // the edge gave up while a connector was looked for
  bool done = false;
  Event wake;  // the edge gave up, or a connector may be there
};

struct AttachWriter {
  explicit AttachWriter(asio::any_io_executor ex) : lock(std::move(ex)) {}
  AsyncMutex lock;                 // one write at a time: the Attach loop's replies and Credits
  AttachStream* stream = nullptr;  // null once the Attach ended
};

namespace {

struct Metrics {
  prometheus::Family<prometheus::Gauge>& connectors;
  prometheus::Family<prometheus::Gauge>& parked;
  prometheus::Gauge& in_flight;
  prometheus::Family<prometheus::Counter>& exchanges;
  prometheus::Family<prometheus::Counter>& refusals;
  prometheus::Family<prometheus::Counter>& attaches;
  prometheus::Counter& pull_streams;
  prometheus::Counter& invoke_streams;
  prometheus::Counter& pull_reparks;
  prometheus::Family<prometheus::Counter>& messages;
  prometheus::Counter& messages_from_edges;
  prometheus::Counter& messages_from_connectors;
  prometheus::Histogram& duration;
  prometheus::Counter& bytes_up;
  prometheus::Counter& bytes_down;
  prometheus::Gauge& config_version;
  prometheus::Gauge& config_watchers;
  prometheus::Family<prometheus::Counter>& config_updates;
  prometheus::Family<prometheus::Gauge>& session_streams;
  prometheus::Gauge& session_streams_edge;
  prometheus::Gauge& session_streams_connector;
  prometheus::Gauge& ws_sessions;

  explicit Metrics(prometheus::Registry& r)
      : connectors(prometheus::BuildGauge()
                       .Name("postern_broker_connectors_attached")
                       .Help("Connector sessions attached, per alias")
                       .Register(r)),
        parked(prometheus::BuildGauge()
                   .Name("postern_broker_parked_streams")
                   .Help("Parked Pull streams waiting for an exchange, per alias")
                   .Register(r)),
        in_flight(prometheus::BuildGauge()
                      .Name("postern_broker_exchanges_in_flight")
                      .Help("Exchanges spliced onto a connector right now")
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
                     .Register(r)),
        pull_streams(prometheus::BuildCounter()
                         .Name("postern_broker_pull_streams_total")
                         .Help("Pull streams accepted from connectors")
                         .Register(r)
                         .Add({})),
        invoke_streams(prometheus::BuildCounter()
                           .Name("postern_broker_invoke_streams_total")
                           .Help("Invoke streams accepted from edges (each carries one exchange at a time, and "
                                 "another after each clean one)")
                           .Register(r)
                           .Add({})),
        pull_reparks(prometheus::BuildCounter()
                         .Name("postern_broker_pull_reparks_total")
                         .Help("Pull streams parked again after a clean exchange")
                         .Register(r)
                         .Add({})),
        messages(prometheus::BuildCounter()
                     .Name("postern_broker_tunnel_messages_total")
                     .Help("gRPC messages read on exchange streams (Relay.Invoke, Registration.Pull, and the "
                           "Sessions streams), by sender; frames ready together share one")
                     .Register(r)),
        messages_from_edges(messages.Add({{"from", "edge"}})),
        messages_from_connectors(messages.Add({{"from", "connector"}})),
        duration(prometheus::BuildHistogram()
                     .Name("postern_broker_exchange_duration_seconds")
                     .Help("Time from an exchange's request head to the end of its response")
                     .Register(r)
                     .Add({}, prometheus::Histogram::BucketBoundaries{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                                     0.25, 0.5, 1, 2.5, 5, 10, 30, 60})),
        bytes_up(prometheus::BuildCounter()
                     .Name("postern_broker_request_bytes_total")
                     .Help("Request body bytes relayed to connectors")
                     .Register(r)
                     .Add({})),
        bytes_down(prometheus::BuildCounter()
                       .Name("postern_broker_response_bytes_total")
                       .Help("Response body bytes relayed to edges")
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
        session_streams(prometheus::BuildGauge()
                            .Name("postern_broker_session_streams")
                            .Help("Sessions streams open (Relay.Sessions from edges, Registration.Sessions from "
                                  "connectors), each carrying many WebSocket sessions")
                            .Register(r)),
        session_streams_edge(session_streams.Add({{"from", "edge"}})),
        session_streams_connector(session_streams.Add({{"from", "connector"}})),
        ws_sessions(prometheus::BuildGauge()
                        .Name("postern_broker_websocket_sessions")
                        .Help("WebSocket sessions routed between Sessions streams right now")
                        .Register(r)
                        .Add({})) {}
};

// Every name the client certificate carries: SANs (URI, DNS), then the CN.
std::vector<std::string> peer_identities(const grpc::AuthContext& auth) {
  std::vector<std::string> out;
  for (const char* prop : {"peer_uri", "x509_subject_alternative_name", "peer_dns", "x509_common_name"}) {
    for (const auto& v : auth.FindPropertyValues(prop)) {
      std::string s(v.data(), v.size());
      if (std::find(out.begin(), out.end(), s) == out.end()) out.push_back(s);
    }
  }
  return out;
}

std::vector<std::string> peer_identities(const grpc::ServerContext& ctx) {
  auto auth = ctx.auth_context();
  return auth ? peer_identities(*auth) : std::vector<std::string>{};
}

// The relay port with client certificates: every call (Invoke, Sessions,
// WatchConfig) must come from an edge identity the config names, checked by
// gRPC before the call reaches a handler. A connector's certificate from the
// same CA does not make it an edge.
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

template <class Stream>
asio::awaitable<bool> finish(Stream& s, const grpc::Status& st) {
  return gb::op([&](void* tag) { s.Finish(st, tag); });
}

tv1::Frame error_frame(tv1::ErrorCode code, std::string message) {
  tv1::Frame f;
  f.mutable_error()->set_code(code);
  f.mutable_error()->set_message(std::move(message));
  return f;
}

// An exchange or session the broker refuses to the edge: logged, and the
// error frame that tells the edge why. The caller counts it.
tv1::Frame rejection(const std::string& request_id, const std::string& alias, tv1::ErrorCode code,
                     const std::string& why) {
  POSTERN_LOG(info, "exchange rejected").kv("request_id", request_id).kv("alias", alias).kv("reason", why);
  return error_frame(code, why);
}

// The name of a frame's kind as the proto spells it ("response_head").
std::string frame_kind(const tv1::Frame& f) {
  const auto* field = tv1::Frame::descriptor()->FindFieldByNumber(static_cast<int>(f.kind_case()));
  return field ? field->name() : std::string("empty");
}

// What is wrong with `f` as the next response-direction frame from a
// connector; empty when it is in order. `phase`: 0 before the response
// head, 1 in an HTTP response, 2 in a WebSocket session (after a 101).
std::string out_of_order(const tv1::Frame& f, int& phase, bool websocket) {
  if (f.has_error()) return {};
  switch (phase) {
    case 0:
      if (!f.has_response_head()) return "a " + frame_kind(f) + " frame before the response head";
      phase = websocket && f.response_head().status() == 101 ? 2 : 1;
      return {};
    case 1:
      if (f.has_response_head()) return "a second response head";
      if (f.has_body() || f.has_end()) return {};
      return "a " + frame_kind(f) + " frame in an HTTP response";
    default:
      if (f.has_response_head()) return "a second response head";
      if (f.has_ws_message() || f.has_ws_close() || f.has_end()) return {};
      return "a " + frame_kind(f) + " frame in a WebSocket session";
  }
}

// A message's last frame.
const tv1::Frame& last_part(const tv1::Frame& f) { return f.then_size() > 0 ? f.then(f.then_size() - 1) : f; }

// True when the message's last frame ends its direction (end or error).
bool ends_direction(const tv1::Frame& f) {
  const tv1::Frame& last = last_part(f);
  return last.has_end() || last.has_error();
}

// Body and message bytes a message carries.
double payload_bytes(const tv1::Frame& f) {
  const auto bytes = [](const tv1::Frame& p) {
    return static_cast<double>(p.body().data().size() + p.ws_message().data().size());
  };
  double n = bytes(f);
  for (const auto& g : f.then()) n += bytes(g);
  return n;
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) {
    if (!out.empty()) out += ", ";
    out += s;
  }
  return out;
}

}  // namespace

struct Broker::Impl {
  asio::io_context& ioc;
  asio::any_io_executor ex;
  config::v1::BrokerConfig cfg;
  std::shared_ptr<prometheus::Registry> prom;
  Metrics metrics;
  Registry registry;

  tv1::Registration::AsyncService registration_service;
  tv1::Relay::AsyncService relay_service;
  std::unique_ptr<grpc::Server> registration_server;
  std::unique_ptr<grpc::Server> relay_server;
  // One thread drives both servers' queues: every call runs on the relay
  // queue; the registration queue only tells of new Attach and Pull calls.
  std::unique_ptr<gb::Pump> pump;
  std::unique_ptr<grpc::ServerCompletionQueue> registration_q, relay_q;  // until the pump has them
  grpc::ServerCompletionQueue* registration_cq = nullptr;
  grpc::ServerCompletionQueue* relay_cq = nullptr;
  int registration_port = 0;
  int relay_port = 0;

  Clock::duration heartbeat_interval;
  Clock::duration heartbeat_timeout;
  Clock::duration park_wait;
  Clock::duration drain_timeout;
  // Bytes toward the client a connector may send ahead of the edge (Credit);
  // a Credit goes out each time a quarter of it has been passed on.
  std::uint64_t response_window = 0;
  std::uint64_t credit_step = 0;
  std::uint64_t next_exchange_id = 0;
  bool draining = false;
  const Clock::time_point started_at = Clock::now();
  std::size_t exchanges_in_flight = 0;
  std::unique_ptr<Event> idle;  // set whenever no exchange is in flight
  grpc_bridge::SnapshotFanout config_fanout;

  Impl(asio::io_context& io, config::v1::BrokerConfig c, std::shared_ptr<prometheus::Registry> p)
      : ioc(io), ex(io.get_executor()), cfg(std::move(c)), prom(std::move(p)), metrics(*prom),
        config_fanout(ex, "edge", true) {
    config_fanout.on_watchers = [this](std::size_t n) { metrics.config_watchers.Set(static_cast<double>(n)); };
    heartbeat_interval = config::duration_or(cfg.heartbeat_interval(), 5s);
    heartbeat_timeout = config::duration_or(cfg.heartbeat_timeout(), 15s);
    park_wait = config::duration_or(cfg.park_wait(), 5s);
    drain_timeout = config::duration_or(cfg.drain_timeout(), 20s);
    response_window = cfg.response_window() ? cfg.response_window() : kResponseWindow;
    credit_step = response_window / 4;
    idle = std::make_unique<Event>(ex);
    attaches_ended = std::make_unique<Event>(ex);
    idle->set();
    registry.set_observer([this](const Registry& r) { update_gauges(r); });
  }

  // Gauges are set from scratch so aliases that vanish drop to zero.
  std::map<std::string, int> known_aliases;
  void update_gauges(const Registry& r) {
    auto conns = r.connectors_per_alias();
    auto parked = r.parked_per_alias();
    for (auto& [alias, _] : known_aliases) {
      metrics.connectors.Add({{"alias", alias}}).Set(0);
      metrics.parked.Add({{"alias", alias}}).Set(0);
    }
    for (auto& [alias, n] : conns) {
      known_aliases[alias] = 1;
      metrics.connectors.Add({{"alias", alias}}).Set(static_cast<double>(n));
    }
    for (auto& [alias, n] : parked) metrics.parked.Add({{"alias", alias}}).Set(static_cast<double>(n));
  }

  // A connector's Pull or Sessions stream names an Attach session: only the
  // identity that attached it may use it. Anyone else is refused, logged
  // and counted (postern_broker_registration_refusals_total, reason
  // "session_identity_mismatch").
  static inline const grpc::Status kForeignSession{grpc::StatusCode::PERMISSION_DENIED,
                                                   "the named session belongs to another identity"};
  bool bound_to(const grpc::ServerContext& ctx, const Session& s, const char* stream) {
    const auto ids = peer_identities(ctx);
    const std::string caller = ids.empty() ? std::string("(none)") : ids.front();
    if (caller == s.identity) return true;
    metrics.refusals.Add({{"reason", "session_identity_mismatch"}}).Increment();
    POSTERN_LOG(warn, "stream refused: it names another identity's session")
        .kv("stream", stream)
        .kv("identity", caller)
        .kv("session", s.label)
        .kv("session_identity", s.identity);
    return false;
  }

  // Enough of a session id for a log line, never the whole secret.
  static std::string shown_id(const std::string& id) { return id.size() <= 8 ? id : id.substr(0, 8) + "..."; }

  bool may_publish(const std::vector<std::string>& ids) const {
    return std::any_of(cfg.identities().begin(), cfg.identities().end(), [&](const config::v1::IdentityGrant& g) {
      return g.publish_config() && std::find(ids.begin(), ids.end(), g.identity()) != ids.end();
    });
  }

  bool identity_allows(const std::vector<std::string>& ids, const std::string& alias, std::string& matched) const {
    for (const auto& grant : cfg.identities()) {
      if (std::find(ids.begin(), ids.end(), grant.identity()) == ids.end()) continue;
      for (const auto& a : grant.aliases()) {
        if (a == "*" || a == alias) {
          matched = grant.identity();
          return true;
        }
      }
    }
    return false;
  }

  // ------------------------------------------------------------ servers

  void start() {
    const auto& reg = cfg.registration();
    if (reg.listen().empty()) throw std::runtime_error("registration.listen is required");
    if (response_window < kMinResponseWindow) {
      throw std::runtime_error("response_window: " + std::to_string(response_window) +
                               " bytes is too small (at least " + std::to_string(kMinResponseWindow) + ")");
    }
    if (!reg.has_tls() || reg.tls().cert_file().empty() || reg.tls().key_file().empty() ||
        reg.tls().client_ca_file().empty()) {
      throw std::runtime_error(
          "registration.tls needs cert_file, key_file and client_ca_file: connectors must present a client "
          "certificate");
    }
    const std::vector<std::string> key_files(cfg.trusted_config_keys().begin(), cfg.trusted_config_keys().end());
    trusted_keys = policy::SnapshotKeys::load(key_files, "trusted_config_keys");
    const auto refresh = gb::refresh_seconds(cfg.file_check_interval());
    registration_server = build(reg.listen(), gb::server_credentials(reg.tls(), "registration", refresh),
                                registration_service, registration_port, registration_q, registration_cq,
                                "registration", /*within_dmz=*/false);

    const auto& relay = cfg.relay();
    if (relay.listen().empty()) throw std::runtime_error("relay.listen is required");
    std::shared_ptr<grpc::ServerCredentials> relay_creds = grpc::InsecureServerCredentials();
    if (relay.has_tls()) {
      relay_creds = gb::server_credentials(relay.tls(), "relay", refresh);
      if (!relay.tls().client_ca_file().empty()) {
        if (cfg.edge_identities().empty()) {
          throw std::runtime_error(
              "edge_identities: required when relay.tls.client_ca_file is set (the identities edges present; a "
              "connector certificate from the same CA must not pass for an edge)");
        }
        relay_creds->SetAuthMetadataProcessor(std::make_shared<EdgeIdentityCheck>(
            std::vector<std::string>(cfg.edge_identities().begin(), cfg.edge_identities().end()),
            metrics.refusals.Add({{"reason", "not_an_edge"}})));
      }
    } else if (!cfg.edge_identities().empty()) {
      throw std::runtime_error("edge_identities: needs relay.tls with client_ca_file (edges prove who they are "
                               "with a client certificate)");
    }
    asio::co_spawn(ex, watch_files(key_files, std::chrono::seconds(refresh), [this, key_files] {
      return reload_keys(key_files);
    }, &draining), asio::detached);
    relay_server = build(relay.listen(), relay_creds, relay_service, relay_port, relay_q, relay_cq, "relay",
                         /*within_dmz=*/true);
    std::vector<std::unique_ptr<grpc::CompletionQueue>> side;
    side.push_back(std::move(registration_q));
    pump = std::make_unique<gb::Pump>(std::move(relay_q), "cq-broker", std::move(side));

    asio::co_spawn(ex, accept_attach(), asio::detached);
    asio::co_spawn(ex, accept_pull(), asio::detached);
    asio::co_spawn(ex, accept_invoke(), asio::detached);
    asio::co_spawn(ex, accept_sessions(true), asio::detached);
    asio::co_spawn(ex, accept_sessions(false), asio::detached);
    asio::co_spawn(ex, trim_loop(), asio::detached);
    asio::co_spawn(ex,
                   config_fanout.accept([this](grpc::ServerContext* ctx, policy::v1::WatchRequest* req,
                                               grpc::ServerAsyncWriter<policy::v1::SignedSnapshot>* w, void* tag) {
                     relay_service.RequestWatchConfig(ctx, req, w, relay_cq, relay_cq, tag);
                   }),
                   asio::detached);
  }

  // ------------------------------------------------------------ config
  //
  // A connector relays what its policy service signed. The broker takes it
  // only from an identity granted publish_config and only with a valid
  // signature by a trusted key, and serves edges the newest version among
  // what its attached connectors hold now: when the connector that relayed
  // the newest leaves, edges follow the others back (none left: the last
  // one stays).

  // Each attached publisher's latest snapshot, by session id.
  std::map<std::string, policy::SignedCatalog> published;
  std::shared_ptr<const policy::SnapshotKeys> trusted_keys;

  void accept_snapshot(const policy::v1::SignedSnapshot& wire, const Session& from) {
    auto count = [&](const char* result) { metrics.config_updates.Add({{"result", result}}).Increment(); };
    if (!from.may_publish) {
      count("not_permitted");
      POSTERN_LOG(warn, "policy snapshot refused")
          .kv("connector", from.connector_id)
          .kv("identity", from.identity)
          .kv("reason", "identity '" + from.identity + "' may not publish config (identities[].publish_config)");
      return;
    }
    const auto mine = published.find(from.id);
    policy::SnapshotOutcome outcome;
    auto got = policy::open_snapshot(*trusted_keys, std::make_shared<const policy::v1::SignedSnapshot>(wire),
                                     mine == published.end() ? nullptr : mine->second.catalog.get(),
                                     "connector " + from.connector_id, outcome);
    count(policy::outcome_label(outcome));
    if (!got) return;
    published[from.id] = std::move(*got);
    serve_newest();
  }

  // The session's snapshot no longer counts once it detaches.
  void forget_publisher(const Session& s) {
    if (published.erase(s.id) > 0) serve_newest();
  }

  // Edges get the newest version an attached publisher holds.
  void serve_newest() {
    const policy::SignedCatalog* best = nullptr;
    for (const auto& [_, p] : published) {
      if (!best || p.catalog->version() > best->catalog->version()) best = &p;
    }
    if (!best || best->wire == config_fanout.current()) return;
    metrics.config_version.Set(static_cast<double>(best->catalog->version()));
    POSTERN_LOG(info, "policy snapshot served to edges")
        .kv("version", best->catalog->version())
        .kv("digest", best->catalog->snapshot().digest().substr(0, 16));
    config_fanout.publish(best->wire, best->catalog->version());
  }

  // New trusted keys (a rotation): snapshots no longer signed by one of them
  // stop counting, and edges fall back to the newest that still does.
  bool reload_keys(const std::vector<std::string>& files) {
    try {
      trusted_keys = policy::SnapshotKeys::load(files, "trusted_config_keys");
    } catch (const std::exception& e) {
      POSTERN_LOG(error, "trusted keys not reloaded; the old ones stay").kv("error", e.what());
      return true;
    }
    POSTERN_LOG(info, "trusted keys reloaded").kv("keys", trusted_keys->ids());
    std::erase_if(published, [&](const auto& p) {
      policy::v1::Snapshot ignored;
      return !trusted_keys->open(*p.second.wire, ignored).empty();
    });
    serve_newest();
    return true;
  }

  std::unique_ptr<grpc::Server> build(const std::string& listen, std::shared_ptr<grpc::ServerCredentials> creds,
                                      grpc::Service& service, int& port,
                                      std::unique_ptr<grpc::ServerCompletionQueue>& q,
                                      grpc::ServerCompletionQueue*& cq, const char* name, bool within_dmz) {
    grpc::ServerBuilder b;
    b.AddListeningPort(listen, creds, &port);
    b.RegisterService(&service);
    grpc_bridge::apply_server_args(b);
    if (within_dmz) grpc_bridge::apply_dmz_link_server_args(b);
    b.SetMaxReceiveMessageSize(4 * 1024 * 1024);
    q = b.AddCompletionQueue();
    cq = q.get();
    auto server = b.BuildAndStart();
    if (!server || port == 0) {
      throw std::runtime_error(std::string(name) + " port: cannot listen on " + listen +
                               " (address in use, bad address or bad TLS material)");
    }
    auto colon = listen.rfind(':');
    POSTERN_LOG(info, "listening")
        .kv("listener", name)
        .kv("address", listen.substr(0, colon))
        .kv("port", port);
    return server;
  }

  // ------------------------------------------------------------ Attach

  static constexpr std::uint64_t kResponseWindow = 4 << 20;
  static constexpr std::uint64_t kMinResponseWindow = 64 << 10;

  struct AttachCall {
    grpc::ServerContext ctx;
    AttachStream stream{&ctx};
  };

  // Attach streams of attached connectors: a drain ends them once its
  // exchanges are done, so the server's shutdown need not wait for them.
  std::set<grpc::ServerContext*> attach_calls;
  // Set when the last of attach_calls has seen its stream end (and logged
  // the detach): a drain waits for it before the process stops.
  std::unique_ptr<Event> attaches_ended;

  asio::awaitable<void> accept_attach() {
    for (;;) {
      auto call = std::make_unique<AttachCall>();
      bool ok = co_await gb::op([&](void* tag) {
        registration_service.RequestAttach(&call->ctx, &call->stream, relay_cq, registration_cq, tag);
      });
      if (!ok) co_return;
      asio::co_spawn(ex, handle_attach(std::move(call)), asio::detached);
    }
  }

  asio::awaitable<void> handle_attach(std::unique_ptr<AttachCall> call) {
    auto& ctx = call->ctx;
    auto& stream = call->stream;
    const auto ids = peer_identities(ctx);
    const std::string identity = ids.empty() ? std::string("(none)") : ids.front();
    tv1::ConnectorMessage msg;
    bool ok;
    {
      Deadline hello_deadline(ex, 10s, [&ctx] { ctx.TryCancel(); });
      ok = co_await gb::read(stream, msg);
    }
    if (!ok || !msg.has_hello()) {
      metrics.refusals.Add({{"reason", "no_hello"}}).Increment();
      POSTERN_LOG(warn, "registration refused").kv("identity", identity).kv("reason", "no hello");
      {
        const grpc::Status st(grpc::StatusCode::INVALID_ARGUMENT, "expected Hello as the first message");
        co_await finish(stream, st);
      }
      co_return;
    }
    const auto& hello = msg.hello();
    std::vector<std::string> aliases(hello.aliases().begin(), hello.aliases().end());
    std::string refused_alias;
    std::string matched;
    for (const auto& a : aliases) {
      if (!identity_allows(ids, a, matched)) {
        refused_alias = a;
        break;
      }
    }
    if (aliases.empty() || !refused_alias.empty()) {
      const std::string why = aliases.empty() ? "the hello names no alias"
                                              : "identity '" + identity + "' may not register alias '" +
                                                    refused_alias + "'";
      metrics.refusals.Add({{"reason", aliases.empty() ? "no_alias" : "alias_not_allowed"}}).Increment();
      POSTERN_LOG(warn, "registration refused")
          .kv("identity", identity)
          .kv("identities", join(ids))
          .kv("connector", hello.connector_id())
          .kv("alias", refused_alias)
          .kv("reason", why);
      {
        const grpc::Status st(grpc::StatusCode::PERMISSION_DENIED, "registration refused: " + why);
        co_await finish(stream, st);
      }
      co_return;
    }
    if (draining) {
      {
        const grpc::Status st(grpc::StatusCode::UNAVAILABLE, "broker is draining");
        co_await finish(stream, st);
      }
      co_return;
    }

    auto session = registry.add(hello.connector_id(), identity, aliases);
    session->pool_size = hello.pool_size();
    session->flow_control = hello.flow_control();
    session->may_publish = may_publish(ids);
    auto writer = std::make_shared<AttachWriter>(ex);
    writer->stream = &stream;
    session->attach = writer;
    metrics.attaches.Add({}).Increment();
    POSTERN_LOG(info, "connector attached")
        .kv("session", session->label)
        .kv("connector", hello.connector_id())
        .kv("identity", identity)
        .kv("aliases", join(aliases));

    tv1::BrokerMessage welcome;
    auto* w = welcome.mutable_welcome();
    w->set_session_id(session->id);
    w->set_broker_id(cfg.id());
    w->set_heartbeat_interval_ms(
        static_cast<std::uint32_t>(std::chrono::duration_cast<std::chrono::milliseconds>(heartbeat_interval).count()));
    w->set_heartbeat_timeout_ms(
        static_cast<std::uint32_t>(std::chrono::duration_cast<std::chrono::milliseconds>(heartbeat_timeout).count()));
    std::string reason = "closed by connector";
    // GCC 12 miscompiles co_await inside a condition: await into a local first.
    const bool welcomed = co_await gb::write(stream, welcome);
    if (welcomed) {
      bool silent = false;
      Deadline silence(ex, heartbeat_timeout, [&ctx, &silent] {
        silent = true;
        ctx.TryCancel();
      });
      attach_calls.insert(&ctx);
      for (;;) {
        tv1::ConnectorMessage m;
        const bool got = co_await gb::read(stream, m);
        if (!got) break;
        silence.rearm(heartbeat_timeout);
        tv1::BrokerMessage reply;
        if (m.has_heartbeat()) {
          reply.mutable_heartbeat()->set_seq(m.heartbeat().seq());
        } else if (m.has_drain()) {
          POSTERN_LOG(info, "connector draining").kv("session", session->label).kv("connector", session->connector_id);
          registry.drain(session);
          reply.mutable_drain()->set_reason("ack");
        } else if (m.has_config()) {
          accept_snapshot(m.config(), *session);
          continue;
        } else {
          continue;
        }
        co_await writer->lock.lock();
        const bool sent = co_await gb::write(stream, reply);
        writer->lock.unlock();
        if (!sent) break;
      }
      attach_calls.erase(&ctx);
      if (silent) reason = "heartbeat timeout";
      if (draining) reason = "broker drained";
    }
    // No Credit may start on the stream from here on.
    co_await writer->lock.lock();
    writer->stream = nullptr;
    writer->lock.unlock();
    registry.remove(session);
    forget_publisher(*session);
    POSTERN_LOG(info, "connector detached")
        .kv("session", session->label)
        .kv("connector", session->connector_id)
        .kv("reason", reason);
    if (attach_calls.empty()) attaches_ended->set();
    co_await finish(stream, grpc::Status::OK);
  }

  // ------------------------------------------------------------ Pull
  //
  // A Pull stream's life (tunnel.proto, Registration.Pull):
  //
  //   Park ─▶ parked ─▶ assigned an exchange ─▶ spliced ─▶ clean end? ──yes──▶ wait for Park ─▶ parked …
  //                │                                         │ no                  │ half-close, bad frame,
  //                └─ cancelled (session gone, draining,     ▼                      │ session gone/draining
  //                   early frame, connector let go,         │                      │
  //                   idle beyond the pool) ─────────────▶ Finish ◀─────────────────┘
  //
  // An HTTP exchange is clean when the request's end reached the connector
  // and the response's end reached the edge, with no error on either side;
  // then the stream is kept for the same session, but only parked again once
  // the connector sends a fresh Park on it: the connector decides whether it
  // wants the stream back (a stream it retires instead is half-closed, never
  // handed a request it could not answer). WebSocket sessions and anything
  // unclean end the stream, as does a Park naming a session that is gone or
  // draining. Streams beyond the session's pool_size (Hello) that nothing
  // took for kPoolTrimIdle end with OK: the broker, not the connector, trims
  // the pool after a burst, since only it knows which parked streams are
  // idle rather than already handed a request.
  // Milliseconds, so that the trim tick (a quarter of it) is not rounded
  // to zero: as `2s`, `kPoolTrimIdle / 4` was 0 s and trim_loop spun.
  static constexpr std::chrono::milliseconds kPoolTrimIdle{2000};
  static constexpr auto kPoolTrimTick = kPoolTrimIdle / 4;
  static_assert(kPoolTrimTick >= std::chrono::milliseconds(100));

  struct PullCall final : PullSlot {
    explicit PullCall(asio::any_io_executor ex) : assigned(ex), done(ex), first_read(ex) {}
    grpc::ServerContext ctx;
    FrameStream stream{&ctx};
    Event assigned;
    Event done;
    bool cancelled = false;
    // Set by the Invoke before `done` when the exchange ended cleanly both
    // ways: the stream may carry another one.
    bool reusable = false;
    // Ended by trim_loop: a stream beyond the pool nothing took (OK).
    bool retired = false;
    // The read kept outstanding while the stream is parked; the splice
    // takes its result as the exchange's first response frame.
    Event first_read;
    bool first_ok = false;
    tv1::Frame first;
    std::string violation;  // set when the connector sent a frame before any request
    // A Park that came coalesced with the response's end: the stream's
    // next Park, already read.
    std::optional<tv1::Frame> next_park;
    void cancel() override {
      cancelled = true;
      assigned.set();
    }
    // How the call ends when cancelled while parked.
    grpc::Status cancelled_status() const {
      if (retired) return grpc::Status::OK;
      if (!violation.empty()) return {grpc::StatusCode::INVALID_ARGUMENT, violation};
      return {grpc::StatusCode::UNAVAILABLE, "session draining or gone"};
    }
    // Back to the state of a stream that was never parked.
    void reset() {
      assigned.reset();
      done.reset();
      first_read.reset();
      first_ok = false;
      first.Clear();
      reusable = false;
    }
  };

  // Streams beyond a session's pool_size that stay parked kPoolTrimIdle end
  // (OK). Under load a connector parks streams beyond its pool to cover the
  // exchanges in flight and they are taken again at once; ending them as
  // they came back (as this broker did) made the connector open new ones
  // for about one exchange in six.
  asio::awaitable<void> trim_loop() {
    asio::steady_timer tick(ex);
    while (!draining) {
      tick.expires_after(kPoolTrimTick);
      co_await tick.async_wait(use_nothrow);
      for (PullSlot* slot : registry.trim(Clock::now() - kPoolTrimIdle)) {
        auto* c = static_cast<PullCall*>(slot);
        c->retired = true;
        c->cancel();
      }
    }
  }

  asio::awaitable<void> accept_pull() {
    for (;;) {
      auto call = std::make_unique<PullCall>(ex);
      bool ok = co_await gb::op([&](void* tag) {
        registration_service.RequestPull(&call->ctx, &call->stream, relay_cq, registration_cq, tag);
      });
      if (!ok) co_return;
      metrics.pull_streams.Increment();
      asio::co_spawn(ex, handle_pull(std::move(call)), asio::detached);
    }
  }

  // Reads the connector's Park, bounded in time.
  asio::awaitable<bool> read_park(PullCall& call, tv1::Frame& park) {
    park.Clear();
    Deadline d(ex, 10s, [c = &call] { c->ctx.TryCancel(); });
    const bool ok = co_await gb::read(call.stream, park);
    if (ok) metrics.messages_from_connectors.Increment();
    co_return ok;
  }

  asio::awaitable<void> handle_pull(std::unique_ptr<PullCall> call) {
    tv1::Frame park;
    bool ok = co_await read_park(*call, park);
    if (!ok || !park.has_park()) {
      if (ok) {
        POSTERN_LOG(warn, "pull refused")
            .kv("reason", "expected Park first, got " + frame_kind(park))
            .kv("identity", join(peer_identities(call->ctx)));
      }
      {
        const grpc::Status st(grpc::StatusCode::INVALID_ARGUMENT, "expected Park first");
        co_await finish(call->stream, st);
      }
      co_return;
    }
    for (bool again = false;; again = true) {
      auto session = registry.find(park.park().session_id());
      if (session && !bound_to(call->ctx, *session, "pull")) {
        co_await finish(call->stream, kForeignSession);
        co_return;
      }
      if (!session || !registry.park(session, call.get())) {
        if (again) {
          // The session drained or went while the stream carried an exchange.
          const grpc::Status st(grpc::StatusCode::UNAVAILABLE, "session draining or gone");
          co_await finish(call->stream, st);
          co_return;
        }
        POSTERN_LOG(warn, "pull refused")
            .kv("reason", "no attached session '" + shown_id(park.park().session_id()) + "'")
            .kv("identity", join(peer_identities(call->ctx)));
        const grpc::Status st(grpc::StatusCode::FAILED_PRECONDITION,
                              "no attached session '" + shown_id(park.park().session_id()) + "'");
        co_await finish(call->stream, st);
        co_return;
      }
      if (again) metrics.pull_reparks.Increment();
      // A parked stream carries nothing until it is handed a request: a frame
      // sent before that would be taken for the answer to whichever request
      // comes next, so it ends the stream; a read that fails means the
      // connector let go of the stream, which is dropped at once.
      asio::co_spawn(
          ex,
          [this, c = call.get(), session]() -> asio::awaitable<void> {
            c->first_ok = co_await gb::read(c->stream, c->first);
            if (c->first_ok) metrics.messages_from_connectors.Increment();
            c->first_read.set();
            if (c->assigned.is_set()) co_return;  // the splice's (or the cancel's) from here
            registry.unpark(session, c);
            if (c->first_ok) {
              c->violation = "a " + frame_kind(c->first) + " frame before any request";
              POSTERN_LOG(error, "connector protocol violation")
                  .kv("connector", session->connector_id)
                  .kv("session", session->label)
                  .kv("error", c->violation);
            }
            c->cancel();
          },
          asio::detached);
      co_await call->assigned.wait();
      if (call->cancelled) {
        const grpc::Status st = call->cancelled_status();
        co_await finish(call->stream, st);
        break;
      }
      // An Invoke owns the stream now; it sets `done` when it is through.
      co_await call->done.wait();
      if (!call->reusable) {
        co_await finish(call->stream, grpc::Status::OK);
        break;
      }
      // Clean: the splice has taken the parked read's result, so nothing is
      // outstanding. The connector parks the stream again or half-closes it.
      call->reset();
      if (call->next_park) {
        park = std::move(*call->next_park);
        call->next_park.reset();
        ok = true;
      } else {
        ok = co_await read_park(*call, park);
      }
      if (!ok || !park.has_park()) {
        grpc::Status st = grpc::Status::OK;
        if (ok) {
          st = grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "a " + frame_kind(park) + " frame after an exchange");
          POSTERN_LOG(error, "connector protocol violation")
              .kv("connector", session->connector_id)
              .kv("session", session->label)
              .kv("error", st.error_message());
        }
        co_await finish(call->stream, st);
        co_return;
      }
    }
    // The call may go only once its read is back.
    if (!call->first_read.is_set()) {
      call->ctx.TryCancel();
      co_await call->first_read.wait();
    }
  }

  // ------------------------------------------------------------ Invoke

  struct InvokeCall {
    explicit InvokeCall(asio::any_io_executor ex) : retired(ex) {}
    grpc::ServerContext ctx;
    FrameStream stream{&ctx};
    // A drain ended the call while it waited for the edge's next request:
    // `retiring` at once, `retired` when the Finish is done.
    bool retiring = false;
    Event retired;
    // The call is over (the edge cancelled it, or it was finished): set by
    // the call's done notification, which also sets `wake` if a wait for a
    // connector is under way then.
    bool over = false;
    Event* wake = nullptr;
  };
  // Invoke streams waiting for the edge's next request.
  std::set<InvokeCall*> idle_invokes;

  asio::awaitable<void> accept_invoke() {
    for (;;) {
      auto call = std::make_shared<InvokeCall>(ex);
      // Holds the call until gRPC is done with it, as AsyncNotifyWhenDone
      // requires.
      gb::notify_when_done(call->ctx, ex, [call] {
        call->over = true;
        if (call->wake) call->wake->set();
      });
      bool ok = co_await gb::op(
          [&](void* tag) { relay_service.RequestInvoke(&call->ctx, &call->stream, relay_cq, relay_cq, tag); });
      if (!ok) co_return;
      asio::co_spawn(ex, handle_invoke(std::move(call)), asio::detached);
    }
  }

  // Whether a connector for the alias is likely to attach soon: this broker
  // started, or the alias' last connector drained or went, less than
  // kAttachExpected ago (a restart of either), rather than nothing ever
  // serving it (an alias no connector is configured for).
  static constexpr std::chrono::seconds kAttachExpected{10};
  bool attach_expected(const std::string& alias) const {
    const auto since = std::max(started_at, registry.lost_at(alias).value_or(started_at));
    return Clock::now() - since < kAttachExpected;
  }

  // Waits until a stream is parked for `alias`, the wait runs out or the
  // edge gives up on `call`.
  asio::awaitable<void> wait_for_park(InvokeCall& call, const std::string& alias, Clock::time_point until) {
    Event parked(ex);
    auto id = registry.add_waiter(alias, [&parked] { parked.set(); });
    call.wake = &parked;
    co_await parked.wait_for(until - Clock::now());
    call.wake = nullptr;
    registry.remove_waiter(id);
  }

  // One Invoke stream: an exchange, then, while each ends cleanly, the
  // edge's next request on the same stream (see Relay.Invoke).
  asio::awaitable<void> handle_invoke(std::shared_ptr<InvokeCall> call) {
    metrics.invoke_streams.Increment();
    auto& in = call->stream;
    tv1::Frame head;
    bool ok;
    {
      Deadline d(ex, 30s, [c = call.get()] { c->ctx.TryCancel(); });
      ok = co_await gb::read(in, head);
      if (ok) metrics.messages_from_edges.Increment();
    }
    if (!ok) {
      {
        const grpc::Status st(grpc::StatusCode::CANCELLED, "no request");
        co_await finish(in, st);
      }
      co_return;
    }
    for (;;) {
      const bool kept = co_await run_exchange(*call, head);
      if (!kept) co_return;
      if (draining) {
        // The drain began while the exchange's last frames were written,
        // after it had ended the streams waiting here: this one ends the
        // same way (OK, nothing answered) rather than wait for a request.
        co_await finish(in, grpc::Status::OK);
        co_return;
      }
      // No deadline: the edge retires the streams it keeps; a drain ends
      // those still waiting here.
      head.Clear();
      idle_invokes.insert(call.get());
      ok = co_await gb::read(in, head);
      idle_invokes.erase(call.get());
      if (call->retiring) {
        // Whatever came is not taken: the edge sees the call end with OK
        // and nothing answered, and sends the request again elsewhere.
        co_await call->retired.wait();
        co_return;
      }
      if (!ok) {
        // The edge let the stream go (half-close or cancel).
        co_await finish(in, grpc::Status::OK);
        co_return;
      }
      metrics.messages_from_edges.Increment();
    }
  }

  // One exchange whose first frame (`head`) was read from `call`. True when
  // it ended cleanly and the stream stays open for the edge's next request;
  // otherwise the call is finished.
  asio::awaitable<bool> run_exchange(InvokeCall& call, tv1::Frame& head) {
    auto& in = call.stream;
    const auto started = Clock::now();
    if (!head.has_request_head()) {
      const auto f = error_frame(tv1::ERROR_CODE_BAD_REQUEST, "expected a request head first");
      co_await gb::write(in, f);
      co_await finish(in, grpc::Status::OK);
      co_return false;
    }
    const std::string alias = head.request_head().alias();
    // Arguments by reference: GCC 12 destroys temporaries in a co_await
    // full-expression twice, so callers pass named values.
    auto reject = [&](tv1::ErrorCode code, const std::string& why) -> asio::awaitable<void> {
      metrics.exchanges.Add({{"alias", alias}, {"result", std::string(error_slug(code))}}).Increment();
      const auto f = rejection(head.request_head().request_id(), alias, code, why);
      co_await gb::write(in, f);
      co_await finish(in, grpc::Status::OK);
    };
    // Find a parked stream; a dead one (its write fails) is dropped and the
    // next one tried, since nothing of the exchange has been handed over.
    // A drain that starts while the request waits refuses it at once, so
    // the edge sends it to another broker.
    // With no connector attached for the alias, the request may wait for
    // one as long as the edge allows, if one is expected (attach_expected).
    const auto arrived = Clock::now();
    const auto give_up = arrived + park_wait;
    const auto attach_until =
        std::min(give_up, arrived + std::chrono::milliseconds(head.request_head().connector_wait_ms()));
    Registry::Pick pick;
    for (;;) {
      if (call.over) {
        // The edge gave up while the request waited (its time ran out, or
        // its client went): nothing is owed, and a request handed over now
        // would still run in the green zone.
        metrics.exchanges.Add({{"alias", alias}, {"result", "abandoned"}}).Increment();
        POSTERN_LOG(info, "exchange abandoned")
            .kv("request_id", head.request_head().request_id())
            .kv("alias", alias)
            .kv("reason", "the edge gave up while it waited for a connector");
        const grpc::Status st(grpc::StatusCode::CANCELLED, "the edge gave up");
        co_await finish(in, st);
        co_return false;
      }
      if (draining) {
        const std::string why = "broker is draining";
        co_await reject(tv1::ERROR_CODE_DRAINING, why);
        co_return false;
      }
      pick = registry.take(alias);
      if (!pick.slot) {
        if (!registry.serves(alias)) {
          if (Clock::now() < attach_until && attach_expected(alias)) {
            co_await wait_for_park(call, alias, attach_until);
            continue;
          }
          const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - arrived);
          const std::string why = "no connector is attached for alias '" + alias + "'" +
                                  (waited >= 1ms ? " (waited " + std::to_string(waited.count()) + " ms for one)" : "");
          co_await reject(tv1::ERROR_CODE_NO_CONNECTOR, why);
          co_return false;
        }
        if (Clock::now() >= give_up) {
          const std::string why = "every connector for alias '" + alias + "' is busy";
          co_await reject(tv1::ERROR_CODE_NO_CAPACITY, why);
          co_return false;
        }
        co_await wait_for_park(call, alias, give_up);
        continue;
      }
      auto* pull = static_cast<PullCall*>(pick.slot);
      pull->assigned.set();
      // Response bodies and a WebSocket session's messages toward the
      // client cross on credit.
      if (pick.session->flow_control) {
        head.mutable_request_head()->set_exchange_id(++next_exchange_id);
        head.mutable_request_head()->set_response_credit(response_window);
      }
      const bool handed = co_await gb::write(pull->stream, head);
      if (handed) break;
      registry.finished(pick.session);
      pull->done.set();
    }

    auto* pull = static_cast<PullCall*>(pick.slot);
    ++exchanges_in_flight;
    idle->reset();
    metrics.in_flight.Increment();
    const bool websocket = head.request_head().websocket();
    metrics.bytes_up.Increment(payload_bytes(head));
    bool kept = false;
    Pacing pacing{pick.session, head.request_head().exchange_id()};
    const std::string result = co_await splice(call, *pull, pick.session->connector_id,
                                               head.request_head().request_id(), websocket, ends_direction(head),
                                               head.then_size() > 0 && last_part(head).has_end(), pacing, kept);
    metrics.in_flight.Decrement();
    registry.finished(pick.session);
    if (--exchanges_in_flight == 0) idle->set();
    pull->done.set();
    metrics.exchanges.Add({{"alias", alias}, {"result", result}}).Increment();
    metrics.duration.Observe(std::chrono::duration<double>(Clock::now() - started).count());
    co_return kept;
  }

  // A WebSocket session spliced through this broker: a drain closes both of
  // its sides with 1001 rather than cutting them when the broker stops.
  // Shared by the splice and a drain's close; `ended` (set by the splice
  // under both locks) means the streams are no longer to be touched.
  struct WsSplice {
    WsSplice(asio::any_io_executor ex, FrameStream& e, FrameStream& c)
        : to_edge(ex), to_connector(ex), edge(e), connector(c) {}
    AsyncMutex to_edge, to_connector;  // one writer per stream at a time
    FrameStream& edge;
    FrameStream& connector;
    bool edge_closed = false, connector_closed = false;  // our close + end went out
    bool ended = false;
  };
  std::map<std::uint64_t, std::shared_ptr<WsSplice>> ws_splices;
  std::uint64_t next_splice = 1;

  // Sends ws_close + end on one side of a session, once.
  asio::awaitable<void> close_side(WsSplice& ws, bool to_edge, std::uint32_t code, const std::string& reason) {
    auto& lock = to_edge ? ws.to_edge : ws.to_connector;
    bool& closed = to_edge ? ws.edge_closed : ws.connector_closed;
    FrameStream& stream = to_edge ? ws.edge : ws.connector;
    co_await lock.lock();
    if (!ws.ended && !closed) {
      closed = true;
      tv1::Frame f;
      f.mutable_ws_close()->set_code(code);
      f.mutable_ws_close()->set_reason(reason);
      const bool ok = co_await gb::write(stream, f);
      if (ok) {
        f.Clear();
        f.mutable_end();
        co_await gb::write(stream, f);
      }
    }
    lock.unlock();
  }

  // Closes both sides of a session with 1001, if it is still there.
  asio::awaitable<void> close_session(std::uint64_t id) {
    auto it = ws_splices.find(id);
    if (it == ws_splices.end()) co_return;
    std::shared_ptr<WsSplice> ws = it->second;
    const std::string reason = "broker draining";
    co_await close_side(*ws, true, 1001, reason);
    co_await close_side(*ws, false, 1001, reason);
  }

  // Writes one frame of a session under its side's lock; dropped once the
  // broker has closed that side itself.
  asio::awaitable<bool> forward(FrameStream& stream, const tv1::Frame& f, WsSplice* ws, bool to_edge) {
    if (!ws) {
      const bool sent = co_await gb::write(stream, f);
      co_return sent;
    }
    auto& lock = to_edge ? ws->to_edge : ws->to_connector;
    co_await lock.lock();
    bool sent = true;
    if (!(to_edge ? ws->edge_closed : ws->connector_closed)) sent = co_await gb::write(stream, f);
    lock.unlock();
    co_return sent;
  }

  // An exchange's response credit (tunnel.proto, Credit): `id` 0 when the
  // connector is not paced.
  struct Pacing {
    std::shared_ptr<Session> session;
    std::uint64_t id = 0;
    std::uint64_t passed = 0;  // body bytes written to the edge since the last Credit
  };

  // Writes a Credit on the session's Attach stream, unless it has ended.
  asio::awaitable<void> send_credit(Pacing& p, bool release) {
    auto w = p.session->attach;
    if (!w) co_return;
    tv1::BrokerMessage m;
    auto* c = m.mutable_credit();
    c->set_exchange_id(p.id);
    c->set_bytes(p.passed);
    c->set_release(release);
    p.passed = 0;
    co_await w->lock.lock();
    if (w->stream) {
      const bool sent = co_await gb::write(*w->stream, m);
      if (!sent) w->stream = nullptr;
    }
    w->lock.unlock();
  }

  // Moves frames both ways until the response ends. Returns a result label.
  // `request_over`: the request's first message also ended it (a GET's head
  // and end), `request_clean` if with its end rather than an error. Sets
  // `in_kept` when the edge's stream stays open for another exchange (an
  // HTTP exchange clean both ways, and no drain); otherwise finishes it.
  asio::awaitable<std::string> splice(InvokeCall& in, PullCall& out, const std::string& connector,
                                      const std::string& request_id, bool websocket, bool request_over,
                                      bool request_clean, Pacing& pacing, bool& in_kept) {
    std::shared_ptr<WsSplice> ws_state;
    WsSplice* ws = nullptr;
    std::uint64_t ws_id = 0;
    if (websocket) {
      ws_state = std::make_shared<WsSplice>(ex, in.stream, out.stream);
      ws = ws_state.get();
      ws_id = next_splice++;
      ws_splices[ws_id] = ws_state;
    }
    Event up_done(ex);
    bool up_clean = request_clean;  // the request's end reached the connector
    bool up_ending = false;         // the request's end was read: its write to the connector may be under way
    bool down_clean = false;        // an HTTP response's end reached the edge
    // Request direction runs beside the response direction, unless the
    // request has crossed whole already.
    if (request_over) {
      up_done.set();
    } else {
      asio::co_spawn(
          ex,
          [&]() -> asio::awaitable<void> {
            for (;;) {
              tv1::Frame f;
              const bool got = co_await gb::read(in.stream, f);
              if (got) metrics.messages_from_edges.Increment();
              if (!got) {
                const auto gone = error_frame(tv1::ERROR_CODE_CLIENT_GONE, "edge went away");
                co_await forward(out.stream, gone, ws, false);
                break;
              }
              metrics.bytes_up.Increment(payload_bytes(f));
              const bool last = ends_direction(f);
              up_ending = last;
              const bool sent = co_await forward(out.stream, f, ws, false);
              if (!sent) break;
              if (last) {
                up_clean = last_part(f).has_end();
                break;
              }
            }
          },
          [&](std::exception_ptr) { up_done.set(); });
    }
    bool in_finished = false;  // the edge's call was finished with the response's end

    std::string result = "ok";
    int phase = 0;
    for (bool first = true;; first = false) {
      tv1::Frame f;
      bool got = false;
      if (first) {
        // The read the parked stream had outstanding.
        co_await out.first_read.wait();
        got = out.first_ok;
        f = std::move(out.first);
      } else {
        got = co_await gb::read(out.stream, f);
        if (got) metrics.messages_from_connectors.Increment();
      }
      if (!got) {
        result = "connector_lost";
        POSTERN_LOG(warn, "connector lost mid-exchange").kv("connector", connector);
        const auto lost =
            error_frame(tv1::ERROR_CODE_CONNECTOR_LOST, "connector '" + connector + "' went away mid-exchange");
        co_await forward(in.stream, lost, ws, true);
        break;
      }
      // Frames out of order end the exchange: relayed, they would turn
      // into a response the edge cannot make sense of. A Park may follow an
      // HTTP response's end in the same message: the stream's next Park.
      std::string wrong;
      bool ended_here = false;
      // The message's frames in order: itself (0), then `then` (1..).
      const std::size_t count = 1 + static_cast<std::size_t>(f.then_size());
      for (std::size_t i = 0; i < count && wrong.empty(); ++i) {
        const tv1::Frame& p = i == 0 ? f : f.then(static_cast<int>(i - 1));
        if (i > 0 && p.then_size() > 0) {
          wrong = "nested coalesced frames";
        } else if (p.has_park() && i > 0 && i + 1 == count && ended_here && phase == 1) {
          out.next_park = std::move(*f.mutable_then()->Mutable(f.then_size() - 1));
          f.mutable_then()->RemoveLast();
          break;
        } else if (ended_here) {
          wrong = "a " + frame_kind(p) + " frame after the response's end";
        } else {
          wrong = out_of_order(p, phase, websocket);
          ended_here = p.has_end() || p.has_error();
        }
      }
      if (!wrong.empty()) {
        result = "protocol_error";
        POSTERN_LOG(error, "connector protocol violation")
            .kv("connector", connector)
            .kv("request_id", request_id)
            .kv("error", wrong);
        const auto bad = error_frame(tv1::ERROR_CODE_UPSTREAM_PROTOCOL,
                                     "connector '" + connector + "' broke the tunnel protocol: " + wrong);
        co_await forward(in.stream, bad, ws, true);
        out.ctx.TryCancel();
        break;
      }
      const double payload = payload_bytes(f);
      metrics.bytes_down.Increment(payload);
      const bool last = ended_here;
      const tv1::Frame& final_part = last_part(f);
      if (final_part.has_error()) result = std::string(error_slug(final_part.error().code()));
      bool sent;
      // The connector may answer before this side has seen its write of the
      // request's end complete (a busy machine): wait for that write, or a
      // clean exchange would end the edge's stream instead of keeping it.
      if (last && !ws && !up_clean && up_ending) co_await up_done.wait();
      // Kept: the request's end came in and the response's comes now.
      const bool keep = last && !ws && !draining && final_part.has_end() && phase == 1 && up_clean;
      if (last && !ws && !keep) {
        // The response's end and the call's status leave together.
        sent = co_await gb::write_and_finish(in.stream, f, grpc::Status::OK);
        in_finished = true;
      } else {
        sent = co_await forward(in.stream, f, ws, true);
      }
      if (!sent) {
        result = "edge_gone";
        out.ctx.TryCancel();
        break;
      }
      if (last) {
        down_clean = final_part.has_end() && phase == 1;
        in_kept = keep;
        break;
      }
      if (pacing.id) {
        // The edge took these bytes (its window is small): the connector
        // may send as many more.
        pacing.passed += static_cast<std::uint64_t>(payload);
        if (pacing.passed >= credit_step) co_await send_credit(pacing, false);
      }
    }
    // A connector still waiting for credit is let go: its next write fails
    // if the exchange was cut.
    if (pacing.id && !down_clean) co_await send_credit(pacing, true);
    // The response is complete (or dead); a request direction still running
    // has nothing left to deliver.
    // (`up_clean`: the request direction read its end and does nothing more.)
    const bool up_finished = up_done.is_set() || up_clean;
    if (!up_finished) out.ctx.TryCancel();
    if (ws) {
      // A drain's close may still be writing: wait for it, then no more.
      ws_splices.erase(ws_id);
      co_await ws->to_edge.lock();
      co_await ws->to_connector.lock();
      ws->ended = true;
      ws->to_connector.unlock();
      ws->to_edge.unlock();
    }
    if (!in_finished && !in_kept) co_await finish(in.stream, grpc::Status::OK);
    co_await up_done.wait();
    out.reusable = !websocket && down_clean && up_finished && up_clean;
    co_return result;
  }

  // ------------------------------------------------------------ Sessions
  //
  // WebSocket sessions on shared streams (tunnel.proto, Relay.Sessions): an
  // edge's stream carries its sessions to this broker, a connector's those
  // this broker hands it. The broker routes each frame by its session id;
  // message credit is the edge's and the connector's business, so a route
  // holds no messages: the only queue is each stream's outbox.

  std::set<SessionsCarrier*> carriers;

  asio::awaitable<void> accept_sessions(bool from_edge) {
    for (;;) {
      auto c = std::make_unique<SessionsCarrier>(ex, from_edge);
      bool ok = co_await gb::op([&](void* tag) {
        if (from_edge) {
          relay_service.RequestSessions(&c->ctx, &c->stream, relay_cq, relay_cq, tag);
        } else {
          registration_service.RequestSessions(&c->ctx, &c->stream, relay_cq, registration_cq, tag);
        }
      });
      if (!ok) co_return;
      asio::co_spawn(ex, handle_sessions(std::move(c)), asio::detached);
    }
  }

  asio::awaitable<void> handle_sessions(std::unique_ptr<SessionsCarrier> owned) {
    auto& c = *owned;
    gb::FrameReader reader;
    tv1::Frame f;
    if (!c.edge) {
      // A connector's names its Attach session first.
      bool ok;
      {
        Deadline d(ex, 10s, [&c] { c.ctx.TryCancel(); });
        ok = co_await reader.read(c.stream, f);
      }
      std::shared_ptr<Session> session;
      if (ok && f.has_park()) session = registry.find(f.park().session_id());
      if (session && !bound_to(c.ctx, *session, "sessions")) {
        co_await finish(c.stream, kForeignSession);
        co_return;
      }
      if (!session || !registry.set_carrier(session, &c)) {
        const std::string why = !ok              ? "no Park"
                                : !f.has_park() ? "expected Park first, got " + frame_kind(f)
                                                : "no attached session '" + shown_id(f.park().session_id()) + "'";
        POSTERN_LOG(warn, "sessions stream refused").kv("reason", why).kv("identity", join(peer_identities(c.ctx)));
        const grpc::Status st(ok && f.has_park() ? grpc::StatusCode::FAILED_PRECONDITION
                                                 : grpc::StatusCode::INVALID_ARGUMENT,
                              why);
        co_await finish(c.stream, st);
        co_return;
      }
      c.attach = session;
    }
    (c.edge ? metrics.session_streams_edge : metrics.session_streams_connector).Increment();
    carriers.insert(&c);
    Event writer_done(ex);
    asio::co_spawn(
        ex, [&c]() -> asio::awaitable<void> {
          const bool ok = co_await c.out.run(c.stream);
          if (!ok) c.ctx.TryCancel();
        },
        [&writer_done](std::exception_ptr) { writer_done.set(); });
    for (;;) {
      const bool got = co_await reader.read(c.stream, f);
      if (!got) break;
      (c.edge ? metrics.messages_from_edges : metrics.messages_from_connectors).Increment();
      // One frame at a time: the reader splits coalesced ones.
      if (c.edge) {
        route_from_edge(c, std::move(f));
      } else {
        route_from_connector(c, std::move(f));
      }
      f.Clear();
    }
    // The stream is over, and with it every session it carried.
    c.over = true;
    carriers.erase(&c);
    if (c.attach && c.attach->carrier == &c) registry.set_carrier(c.attach, nullptr);
    auto routes = std::move(c.routes);
    c.routes.clear();
    for (auto& [_, r] : routes) {
      if (c.edge) {
        r->abandoned = true;
        r->wake.set();
        if (r->connector) cut(*r, false, tv1::ERROR_CODE_CLIENT_GONE, "the edge went away");
        end_route(*r, "edge_gone");
      } else {
        cut(*r, true, tv1::ERROR_CODE_CONNECTOR_LOST,
            "connector '" + (c.attach ? c.attach->connector_id : std::string()) + "' went away mid-session");
        end_route(*r, "connector_lost");
      }
    }
    c.out.close();
    c.ctx.TryCancel();  // a write the peer no longer reads must not hold this
    co_await writer_done.wait();
    (c.edge ? metrics.session_streams_edge : metrics.session_streams_connector).Decrement();
    co_await finish(c.stream, grpc::Status::OK);
  }

  // Sends one frame of route `r` to the edge (`to_edge`) or the connector,
  // under the session's id on that side.
  void send_on(MuxRoute& r, bool to_edge, tv1::Frame&& f) {
    SessionsCarrier* c = to_edge ? r.edge : r.connector;
    if (!c || c->over) return;
    f.set_session(to_edge ? r.edge_id : r.connector_id);
    c->out.push(std::move(f));
  }

  void cut(MuxRoute& r, bool to_edge, tv1::ErrorCode code, const std::string& why) {
    send_on(r, to_edge, error_frame(code, why));
  }

  // The session is over: it leaves both streams' routes.
  void end_route(MuxRoute& r, const std::string& result) {
    if (r.done) return;
    r.done = true;
    if (r.edge) r.edge->routes.erase(r.edge_id);
    if (r.connector) {
      r.connector->routes.erase(r.connector_id);
      registry.finished(r.session);
      metrics.in_flight.Decrement();
      metrics.ws_sessions.Decrement();
      if (--exchanges_in_flight == 0) idle->set();
      metrics.duration.Observe(std::chrono::duration<double>(Clock::now() - r.started).count());
    }
    metrics.exchanges.Add({{"alias", r.alias}, {"result", result}}).Increment();
  }

  void route_from_edge(SessionsCarrier& c, tv1::Frame&& f) {
    const auto it = c.routes.find(f.session());
    if (it == c.routes.end()) {
      if (f.has_request_head() && f.session() != 0 && !f.request_head().websocket()) {
        tv1::Frame bad = error_frame(tv1::ERROR_CODE_BAD_REQUEST, "a Sessions stream carries WebSocket sessions only");
        bad.set_session(f.session());
        c.out.push(std::move(bad));
        return;
      }
      if (f.has_request_head() && f.session() != 0) {
        auto r = std::make_shared<MuxRoute>(ex);
        r->edge = &c;
        r->edge_id = f.session();
        r->alias = f.request_head().alias();
        r->request_id = f.request_head().request_id();
        r->started = Clock::now();
        c.routes[r->edge_id] = r;
        asio::co_spawn(ex, open_route(r, std::move(f)), asio::detached);
      }
      return;  // a frame for a session that is over: dropped
    }
    auto r = it->second;
    if (!r->connector) {
      // Still looking for a connector: only the edge giving up counts.
      if (f.has_error()) {
        r->abandoned = true;
        r->wake.set();
      }
      return;
    }
    switch (f.kind_case()) {
      case tv1::Frame::kError:
        send_on(*r, false, std::move(f));
        end_route(*r, "edge_gone");
        return;
      case tv1::Frame::kWsClose:
        r->edge_closed = true;
        if (!r->broker_closed) send_on(*r, false, std::move(f));
        if (r->connector_closed) end_route(*r, "ok");
        return;
      case tv1::Frame::kWsMessage:
        if (!take_credit(r->edge_may_send, f)) {
          violation(*r, "edge", r->edge ? join(peer_identities(r->edge->ctx)) : std::string(),
                    "a WebSocket message piece past its credit (or over 64 KiB)");
          return;
        }
        if (r->broker_closed || r->edge_closed) return;
        metrics.bytes_up.Increment(static_cast<double>(f.ws_message().data().size()));
        send_on(*r, false, std::move(f));
        return;
      case tv1::Frame::kWsCredit:
        give_credit(r->connector_may_send, f.ws_credit());
        send_on(*r, false, std::move(f));
        return;
      default:
        return;  // nothing else belongs in a session from the edge
    }
  }

  void route_from_connector(SessionsCarrier& c, tv1::Frame&& f) {
    const auto it = c.routes.find(f.session());
    if (it == c.routes.end()) return;  // over: dropped
    auto r = it->second;
    if (f.has_ws_credit()) {
      give_credit(r->edge_may_send, f.ws_credit());
      send_on(*r, true, std::move(f));
      return;
    }
    // In a running session an end adds nothing (each side's ws_close ends
    // its direction); out_of_order() lets it pass for the Invoke splice.
    if (f.has_end() && r->phase == 2) return;
    std::string wrong = out_of_order(f, r->phase, true);
    if (wrong.empty() && !take_credit(r->connector_may_send, f)) {
      wrong = "a WebSocket message piece past its credit (or over 64 KiB)";
    }
    // A refusal's body (every session here is a WebSocket one) is bounded
    // by what the edge keeps of it.
    if (wrong.empty() && r->phase == 1 && f.has_body() &&
        (r->refusal_bytes += f.body().data().size()) > kMaxRefusalBodyBytes) {
      wrong = "a refusal body over " + std::to_string(kMaxRefusalBodyBytes >> 20) + " MiB";
    }
    if (!wrong.empty()) {
      violation(*r, "connector", c.attach ? c.attach->connector_id : std::string(), wrong);
      return;
    }
    if (f.has_response_head() && r->phase == 2 && f.response_head().request_credit() > 0) {
      r->edge_may_send = static_cast<std::int64_t>(f.response_head().request_credit());
    }
    if (f.has_error()) {
      const std::string result(error_slug(f.error().code()));
      send_on(*r, true, std::move(f));
      end_route(*r, result);
      return;
    }
    if (r->phase == 1) {
      // A refusal: head, body, end, and the session is over.
      const bool last = f.has_end();
      send_on(*r, true, std::move(f));
      if (last) end_route(*r, "ok");
      return;
    }
    if (f.has_ws_close()) {
      r->connector_closed = true;
      if (!r->broker_closed) send_on(*r, true, std::move(f));
      if (r->edge_closed) end_route(*r, "ok");
      return;
    }
    if (f.has_ws_message()) {
      if (r->broker_closed || r->connector_closed) return;
      metrics.bytes_down.Increment(static_cast<double>(f.ws_message().data().size()));
    }
    send_on(*r, true, std::move(f));  // the 101, or a message
  }

  // Takes a message piece's bytes from what its sender may send; false when
  // it had nothing left (other frames, and unpaced senders, always pass).
  // Pieces are at most kWsPieceBytes, so that one piece cannot carry more
  // than a step past the window.
  static bool take_credit(std::optional<std::int64_t>& may_send, const tv1::Frame& f) {
    if (!f.has_ws_message() || !may_send) return true;
    if (*may_send <= 0 || f.ws_message().data().size() > kWsPieceBytes) return false;
    *may_send -= static_cast<std::int64_t>(f.ws_message().data().size());
    return true;
  }
  // Credit returned; saturating, whatever the peer claims.
  static void give_credit(std::optional<std::int64_t>& may_send, std::uint64_t n) {
    if (!may_send) return;
    constexpr std::int64_t kMax = std::int64_t{1} << 62;
    *may_send = n >= static_cast<std::uint64_t>(kMax) ? kMax : std::min(kMax, *may_send + static_cast<std::int64_t>(n));
  }

  // One side of a shared session broke the tunnel protocol: logged, and the
  // session ends on both sides with UPSTREAM_PROTOCOL.
  void violation(MuxRoute& r, const char* side, const std::string& who, const std::string& wrong) {
    POSTERN_LOG(error, std::string(side) + " protocol violation")
        .kv(side, who)
        .kv("request_id", r.request_id)
        .kv("error", wrong);
    const std::string named = std::string(side) + (who.empty() ? "" : " '" + who + "'");
    cut(r, true, tv1::ERROR_CODE_UPSTREAM_PROTOCOL, named + " broke the tunnel protocol: " + wrong);
    cut(r, false, tv1::ERROR_CODE_UPSTREAM_PROTOCOL, named + " broke the tunnel protocol: " + wrong);
    end_route(r, "protocol_error");
  }

  // Finds a connector with a Sessions stream for a session the edge opens,
  // and opens it there; or refuses it to the edge.
  asio::awaitable<void> open_route(std::shared_ptr<MuxRoute> r, tv1::Frame head) {
    auto& edge = *r->edge;
    auto refuse = [&](tv1::ErrorCode code, const std::string& why) {
      send_on(*r, true, rejection(r->request_id, r->alias, code, why));
      end_route(*r, std::string(error_slug(code)));  // counts it
    };
    const auto arrived = Clock::now();
    const auto attach_until = std::min(arrived + park_wait,
                                       arrived + std::chrono::milliseconds(head.request_head().connector_wait_ms()));
    std::shared_ptr<Session> session;
    for (;;) {
      if (r->abandoned || edge.over) {
        end_route(*r, "abandoned");
        co_return;
      }
      if (draining) {
        refuse(tv1::ERROR_CODE_DRAINING, "broker is draining");
        co_return;
      }
      session = registry.take_carrier(r->alias);
      if (session) break;
      if (registry.serves(r->alias)) {
        // Connectors are attached, but none has a Sessions stream (older
        // ones, or one that attached a moment ago): the edge opens the
        // session on an Invoke stream instead.
        refuse(tv1::ERROR_CODE_SESSIONS_UNSUPPORTED,
               "no connector attached for alias '" + r->alias + "' carries shared sessions");
        co_return;
      }
      if (Clock::now() < attach_until && attach_expected(r->alias)) {
        r->wake.reset();
        auto id = registry.add_waiter(r->alias, [w = std::weak_ptr<MuxRoute>(r)] {
          if (auto p = w.lock()) p->wake.set();
        });
        co_await r->wake.wait_for(attach_until - Clock::now());
        registry.remove_waiter(id);
        continue;
      }
      const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - arrived);
      refuse(tv1::ERROR_CODE_NO_CONNECTOR, "no connector is attached for alias '" + r->alias + "'" +
                                               (waited >= 1ms ? " (waited " + std::to_string(waited.count()) +
                                                                    " ms for one)"
                                                              : ""));
      co_return;
    }
    auto* conn = session->carrier;
    r->session = session;
    r->connector = conn;
    r->connector_id = conn->next_id++;
    conn->routes[r->connector_id] = r;
    ++exchanges_in_flight;
    idle->reset();
    metrics.in_flight.Increment();
    metrics.ws_sessions.Increment();
    head.clear_then();
    // Bytes toward the client the connector may send ahead: the edge's
    // window, or this broker's response_window if that is smaller.
    auto* rh = head.mutable_request_head();
    if (rh->response_credit() == 0 || rh->response_credit() > response_window) {
      rh->set_response_credit(response_window);
    }
    r->connector_may_send = static_cast<std::int64_t>(rh->response_credit());
    send_on(*r, false, std::move(head));
  }

  // A drain closes every session with 1001 on both sides; each ends when
  // both have answered with their close (or at the drain's end).
  void close_routes() {
    for (auto* c : carriers) {
      if (!c->edge) continue;
      for (auto& [_, r] : c->routes) {
        if (!r->connector || r->broker_closed || r->done) continue;
        r->broker_closed = true;
        const std::string reason = "broker draining";
        tv1::Frame f;
        f.mutable_ws_close()->set_code(1001);
        f.mutable_ws_close()->set_reason(reason);
        if (!r->connector_closed) send_on(*r, true, tv1::Frame(f));
        if (!r->edge_closed) send_on(*r, false, std::move(f));
      }
    }
  }

  // ------------------------------------------------------------ drain

  static constexpr std::chrono::seconds kShutdownDeadline{2};

  asio::awaitable<void> drain() {
    draining = true;
    registry.wake_all();
    config_fanout.close();
    POSTERN_LOG(info, "broker draining").kv("in_flight", static_cast<std::uint64_t>(exchanges_in_flight));
    // WebSocket sessions would outlast any drain: both sides get 1001 now,
    // and the sessions end with their closing handshakes.
    for (const auto& entry : ws_splices) asio::co_spawn(ex, close_session(entry.first), asio::detached);
    close_routes();
    // Streams kept for an edge's next request end now, with OK and nothing
    // answered: the edge sends what it may have just sent again elsewhere.
    for (InvokeCall* c : idle_invokes) {
      c->retiring = true;
      asio::co_spawn(
          ex,
          [c]() -> asio::awaitable<void> {
            co_await finish(c->stream, grpc::Status::OK);
            c->retired.set();
          },
          asio::detached);
    }
    idle_invokes.clear();
    co_await idle->wait_for(drain_timeout);
    // Sessions streams end with the sessions that outlived the wait.
    for (auto* c : carriers) c->ctx.TryCancel();
    for (auto& s : registry.all()) registry.drain(s);
    // The connectors learn by their Attach streams' end and try again until
    // a broker answers at this address; nothing else is left to wait for.
    // Their handlers are let finish (bounded): under load the pump could
    // otherwise stop before the cancelled reads came back, and the
    // connectors' detach went unlogged.
    if (!attach_calls.empty()) {
      attaches_ended->reset();
      for (auto* c : attach_calls) c->TryCancel();
      co_await attaches_ended->wait_for(kShutdownDeadline);
    }
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
    // Every call should have ended above; one that had not was cancelled
    // at the deadline, and whoever made it saw an error.
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
asio::awaitable<void> Broker::drain() { return impl_->drain(); }
int Broker::registration_port() const { return impl_->registration_port; }
int Broker::relay_port() const { return impl_->relay_port; }

}  // namespace postern::broker
