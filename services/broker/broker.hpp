#pragma once
// The broker: registration port for connectors (gRPC, mTLS), relay port for
// edges (gRPC); each exchange an edge opens on one of its lanes is routed to
// a lane of a connector serving its alias (exchange_router.hpp).

#include <boost/asio/io_context.hpp>
#include <memory>
#include <string>

#include "common/asio.hpp"
#include "postern/config/v1/config.pb.h"

namespace prometheus {
class Registry;
}

namespace postern::broker {

class Broker {
 public:
  /// Everything runs on `ioc` (one thread); gRPC queues have pump threads.
  Broker(boost::asio::io_context& ioc, config::v1::BrokerConfig config,
         std::shared_ptr<prometheus::Registry> metrics);
  ~Broker();

  /// Binds both ports and starts serving. Throws std::runtime_error naming
  /// the port and the reason (bad certificate, address in use).
  void start();
  /// Stops taking new exchanges, waits (bounded) for those in flight, then
  /// shuts both servers down.
  asio::awaitable<void> drain();

  /// Ready for edge traffic (BrokerConfig.ready_grace): not draining, and
  /// a connector attached for every alias the config routes to, or the
  /// grace period since start is over. `why` says which.
  bool ready(std::string* why = nullptr) const;

  /// What runs, for the admin port's /status (JSON): attached connectors
  /// (id, identity, aliases, lanes, in flight, since), the aliases the
  /// config routes to and whether each is served here, the config in force.
  std::string status_json() const;

  int registration_port() const;
  int relay_port() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace postern::broker
