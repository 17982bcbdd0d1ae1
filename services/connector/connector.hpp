#pragma once
// The connector: dials OUT to every broker replica over mTLS, attaches and
// keeps its lanes there (broker_link.hpp), and runs each exchange a broker
// opens on them against the native service its alias maps to. It listens on nothing but its (loopback) admin port.

#include <boost/asio/io_context.hpp>
#include <memory>

#include "common/asio.hpp"
#include "postern/config/v1/config.pb.h"

namespace prometheus {
class Registry;
}

namespace postern::connector {

class Connector {
 public:
  Connector(boost::asio::io_context& ioc, config::v1::ConnectorConfig config,
            std::shared_ptr<prometheus::Registry> metrics);
  ~Connector();

  /// Validates TLS material and native URLs (throws std::runtime_error
  /// naming the field), then starts resolving and attaching.
  void start();
  /// Asks every broker for no new exchanges, finishes those in flight
  /// (bounded), closes its lanes, detaches.
  asio::awaitable<void> drain();
  /// True while attached to at least one broker.
  bool attached() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace postern::connector
