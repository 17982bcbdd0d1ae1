#include "broker/attach_session.hpp"

#include <grpcpp/grpcpp.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>

#include <algorithm>

#include "common/crypto/random.hpp"
#include "common/config/yaml_proto.hpp"
#include "common/grpc/bridge.hpp"
#include "common/observability/log.hpp"
#include "postern/tunnel/v1/tunnel.grpc.pb.h"

namespace postern::broker {

namespace tv1 = tunnel::v1;
namespace gb = grpc_bridge;
using namespace std::chrono_literals;

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

namespace {

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
  return out;
}

// Enough of a session id for a log line, never the whole secret.
std::string shown_id(const std::string& id) { return id.size() <= 8 ? id : id.substr(0, 8) + "..."; }

std::string primary_identity(const grpc::ServerContext& ctx) {
  const auto ids = peer_identities(ctx);
  return ids.empty() ? std::string("(none)") : ids.front();
}

}  // namespace

AttachService::AttachService(asio::any_io_executor ex, const config::v1::BrokerConfig& cfg, Registry& registry,
                             ExchangeRouter& router, ConfigRelay& config, Metrics metrics)
    : ex_(ex), cfg_(cfg), registry_(registry), router_(router), config_(config), metrics_(metrics),
      heartbeat_interval_(std::chrono::duration_cast<std::chrono::milliseconds>(
          config::duration_or(cfg.heartbeat_interval(), 5s))),
      heartbeat_timeout_(std::chrono::duration_cast<std::chrono::milliseconds>(
          config::duration_or(cfg.heartbeat_timeout(), 15s))),
      instance_(crypto::random_hex(8)), attaches_ended_(ex) {
  attaches_ended_.set();
}

bool AttachService::identity_allows(const std::vector<std::string>& ids, const std::string& alias) const {
  for (const auto& grant : cfg_.identities()) {
    if (std::find(ids.begin(), ids.end(), grant.identity()) == ids.end()) continue;
    for (const auto& a : grant.aliases()) {
      if (a == "*" || a == alias) return true;
    }
  }
  return false;
}

bool AttachService::may_publish(const std::vector<std::string>& ids) const {
  return std::any_of(cfg_.identities().begin(), cfg_.identities().end(), [&](const config::v1::IdentityGrant& g) {
    return g.publish_config() && std::find(ids.begin(), ids.end(), g.identity()) != ids.end();
  });
}

bool AttachService::bound_to(const grpc::ServerContext& ctx, const Session& s) {
  const std::string caller = primary_identity(ctx);
  if (caller == s.identity) return true;
  metrics_.refusals.Add({{"reason", "session_identity_mismatch"}}).Increment();
  POSTERN_LOG(warn, "stream refused: it names another identity's session")
      .kv("stream", "lane")
      .kv("identity", caller)
      .kv("session", s.label)
      .kv("session_identity", s.identity);
  return false;
}

asio::awaitable<bool> AttachService::refuse(AttachCall& call, const char* reason, int code, const std::string& why,
                                            const std::string& identity) {
  metrics_.refusals.Add({{"reason", reason}}).Increment();
  POSTERN_LOG(warn, "registration refused").kv("identity", identity).kv("reason", why);
  const grpc::Status st(static_cast<grpc::StatusCode>(code), why);
  co_return co_await gb::op([&](void* tag) { call.stream.Finish(st, tag); });
}

// ------------------------------------------------------------ Attach

asio::awaitable<void> AttachService::serve_attach(std::unique_ptr<AttachCall> call) {
  auto& ctx = call->ctx;
  auto& stream = call->stream;
  const auto ids = peer_identities(ctx);
  const std::string identity = ids.empty() ? std::string("(none)") : ids.front();
  tv1::ConnectorMessage msg;
  bool ok;
  {
    Deadline hello_deadline(ex_, 10s, [&ctx] { ctx.TryCancel(); });
    ok = co_await gb::read(stream, msg);
  }
  if (!ok || !msg.has_hello()) {
    co_await refuse(*call, "no_hello", grpc::StatusCode::INVALID_ARGUMENT, "expected Hello as the first message",
                    identity);
    co_return;
  }
  const auto& hello = msg.hello();
  std::vector<std::string> aliases(hello.aliases().begin(), hello.aliases().end());
  std::string refused_alias;
  for (const auto& a : aliases) {
    if (!identity_allows(ids, a)) {
      refused_alias = a;
      break;
    }
  }
  if (aliases.empty() || !refused_alias.empty()) {
    const std::string why = aliases.empty() ? "the hello names no alias"
                                            : "identity '" + identity + "' may not register alias '" + refused_alias +
                                                  "'";
    POSTERN_LOG(warn, "registration refused")
        .kv("identity", identity)
        .kv("identities", join(ids))
        .kv("connector", hello.connector_id())
        .kv("alias", refused_alias)
        .kv("reason", why);
    co_await refuse(*call, aliases.empty() ? "no_alias" : "alias_not_allowed", grpc::StatusCode::PERMISSION_DENIED,
                    "registration refused: " + why, identity);
    co_return;
  }
  if (draining_) {
    const grpc::Status st(grpc::StatusCode::UNAVAILABLE, "broker is draining");
    co_await gb::op([&](void* tag) { stream.Finish(st, tag); });
    co_return;
  }

  auto session = registry_.add(hello.connector_id(), identity, aliases);
  session->capacity = hello.capacity();
  session->may_publish = may_publish(ids);
  metrics_.attaches.Increment();
  POSTERN_LOG(info, "connector attached")
      .kv("session", session->label)
      .kv("connector", hello.connector_id())
      .kv("identity", identity)
      .kv("aliases", join(aliases));

  tv1::BrokerMessage welcome;
  auto* w = welcome.mutable_welcome();
  w->set_session_id(session->id);
  w->set_session_label(session->label);
  w->set_broker_id(cfg_.id());
  w->set_broker_instance(instance_);
  w->set_broker_count(cfg_.expected_brokers());
  w->set_heartbeat_interval_ms(static_cast<std::uint32_t>(heartbeat_interval_.count()));
  w->set_heartbeat_timeout_ms(static_cast<std::uint32_t>(heartbeat_timeout_.count()));
  std::string reason = "closed by connector";
  // GCC 12 miscompiles co_await inside a condition: await into a local first.
  const bool welcomed = co_await gb::write(stream, welcome);
  if (welcomed) {
    bool silent = false;
    Deadline silence(ex_, heartbeat_timeout_, [&ctx, &silent] {
      silent = true;
      ctx.TryCancel();
    });
    attach_calls_.insert(&ctx);
    attaches_ended_.reset();
    for (;;) {
      tv1::ConnectorMessage m;
      const bool got = co_await gb::read(stream, m);
      if (!got) break;
      silence.rearm(heartbeat_timeout_);
      tv1::BrokerMessage reply;
      if (m.has_heartbeat()) {
        reply.mutable_heartbeat()->set_seq(m.heartbeat().seq());
        reply.mutable_heartbeat()->set_in_flight(session->in_flight);
      } else if (m.has_drain()) {
        POSTERN_LOG(info, "connector draining").kv("session", session->label).kv("connector", session->connector_id);
        registry_.drain(session);
        // Each lane says so after what it has queued: once the connector
        // has the mark on every lane, no new exchange can come.
        for (auto* l : session->lanes) static_cast<BrokerLane*>(l)->drain();
        reply.mutable_drain()->set_reason("ack");
      } else if (m.has_config()) {
        config_.accept(m.config(), *session);
        continue;
      } else {
        continue;
      }
      const bool sent = co_await gb::write(stream, reply);
      if (!sent) break;
    }
    attach_calls_.erase(&ctx);
    if (silent) reason = "heartbeat timeout";
    if (draining_) reason = "broker drained";
  }
  registry_.remove(session);
  config_.forget(*session);
  // Its lanes end with it: their exchanges end with CONNECTOR_LOST.
  for (auto* l : std::vector<SessionLane*>(session->lanes)) static_cast<BrokerLane*>(l)->lane().abort();
  POSTERN_LOG(info, "connector detached")
      .kv("session", session->label)
      .kv("connector", session->connector_id)
      .kv("reason", reason);
  if (attach_calls_.empty()) attaches_ended_.set();
  co_await gb::op([&](void* tag) { stream.Finish(grpc::Status::OK, tag); });
}

asio::awaitable<void> AttachService::end_attaches(std::chrono::milliseconds limit) {
  if (attach_calls_.empty()) co_return;
  for (auto* c : attach_calls_) c->TryCancel();
  co_await attaches_ended_.wait_for(limit);
}

// ------------------------------------------------------------ lanes

asio::awaitable<void> AttachService::serve_lane(std::unique_ptr<tunnel::ServerLaneIo> io) {
  tv1::LaneMessage first;
  bool ok;
  {
    Deadline d(ex_, 10s, [&io] { io->cancel(); });
    ok = co_await io->read(first);
  }
  auto end_with = [&](grpc::StatusCode code, std::string why) -> asio::awaitable<void> {
    io->set_status(grpc::Status(code, std::move(why)));
    co_await io->finish();
  };
  if (!ok || !first.has_hello()) {
    POSTERN_LOG(warn, "lane refused").kv("reason", "no LaneHello").kv("identity", primary_identity(io->context()));
    co_await end_with(grpc::StatusCode::INVALID_ARGUMENT, "expected LaneHello first");
    co_return;
  }
  auto session = registry_.find(first.hello().session_id());
  if (!session) {
    const std::string why = "no attached session '" + shown_id(first.hello().session_id()) + "'";
    POSTERN_LOG(warn, "lane refused").kv("reason", why).kv("identity", primary_identity(io->context()));
    co_await end_with(grpc::StatusCode::FAILED_PRECONDITION, why);
    co_return;
  }
  if (!bound_to(io->context(), *session)) {
    co_await end_with(grpc::StatusCode::PERMISSION_DENIED, "the named session belongs to another identity");
    co_return;
  }
  if (session->draining || draining_) {
    co_await end_with(grpc::StatusCode::UNAVAILABLE, "session draining or gone");
    co_return;
  }
  auto lane = std::make_unique<BrokerLane>(router_, BrokerLane::Side::connector, std::move(io), session->connector_id,
                                           session);
  if (!registry_.add_lane(session, lane.get())) {
    lane->lane().abort();
  }
  co_await lane->run();
}

}  // namespace postern::broker
