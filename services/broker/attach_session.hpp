#pragma once
// The registration port's calls (tunnel.proto, Registration): a connector's
// Attach stream (hello, the identity check, heartbeats, drain, relayed
// config) and its lanes, each bound to the identity that attached the
// session it names. Include only in .cpp files (gRPC headers).
//
// Single-threaded: the broker's executor.

#include <grpcpp/server_context.h>
#include <grpcpp/support/async_stream.h>

#include <chrono>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "broker/config_relay.hpp"
#include "broker/exchange_router.hpp"
#include "broker/registry.hpp"
#include "common/event.hpp"
#include "common/tunnel/lane_io.hpp"
#include "postern/config/v1/config.pb.h"
#include "postern/tunnel/v1/tunnel.pb.h"

namespace prometheus {
class Counter;
template <typename T>
class Family;
}  // namespace prometheus

namespace postern::broker {

/// Every name a client certificate carries: SANs (URI, DNS), then the CN.
std::vector<std::string> peer_identities(const grpc::AuthContext& auth);
std::vector<std::string> peer_identities(const grpc::ServerContext& ctx);

class AttachService {
 public:
  using AttachStream = grpc::ServerAsyncReaderWriter<tunnel::v1::BrokerMessage, tunnel::v1::ConnectorMessage>;
  struct AttachCall {
    grpc::ServerContext ctx;
    AttachStream stream{&ctx};
  };

  struct Metrics {
    prometheus::Family<prometheus::Counter>& refusals;  // {reason}
    prometheus::Counter& attaches;
  };

  AttachService(asio::any_io_executor ex, const config::v1::BrokerConfig& cfg, Registry& registry,
                ExchangeRouter& router, ConfigRelay& config, Metrics metrics);

  /// One Attach stream, start to end.
  asio::awaitable<void> serve_attach(std::unique_ptr<AttachCall> call);
  /// One Registration.Lane: its LaneHello names the session; then it runs
  /// until it ends or the session goes.
  asio::awaitable<void> serve_lane(std::unique_ptr<tunnel::ServerLaneIo> io);

  /// Stops taking attaches; the Attach streams end (the connectors detach)
  /// once `drained()` is through.
  void drain() { draining_ = true; }
  /// Ends every Attach stream and waits (bounded) until their handlers have
  /// logged the detach.
  asio::awaitable<void> end_attaches(std::chrono::milliseconds limit);

 private:
  bool identity_allows(const std::vector<std::string>& ids, const std::string& alias) const;
  bool may_publish(const std::vector<std::string>& ids) const;
  // A lane names an Attach session: only the identity that attached it may
  // use it.
  bool bound_to(const grpc::ServerContext& ctx, const Session& s);
  asio::awaitable<bool> refuse(AttachCall& call, const char* reason, int code, const std::string& why,
                               const std::string& identity);

  asio::any_io_executor ex_;
  const config::v1::BrokerConfig& cfg_;
  Registry& registry_;
  ExchangeRouter& router_;
  ConfigRelay& config_;
  Metrics metrics_;
  std::chrono::milliseconds heartbeat_interval_, heartbeat_timeout_;
  // This process among brokers that share an id (Welcome.broker_instance).
  std::string instance_;
  bool draining_ = false;
  // Attach streams of attached connectors, and set once the last of them
  // has ended (and logged the detach).
  std::set<grpc::ServerContext*> attach_calls_;
  Event attaches_ended_;
};

}  // namespace postern::broker
