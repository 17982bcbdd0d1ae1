#pragma once
// The edge: external HTTP/1.1 listeners (plain or TLS), routing, and the
// hand-off to the broker (reverse invoke) or to a DMZ-local upstream.

#include <boost/asio/io_context.hpp>
#include <memory>

#include "common/asio.hpp"
#include "postern/config/v1/config.pb.h"

namespace prometheus {
class Registry;
}

namespace postern::edge {

class EdgeServer {
 public:
  EdgeServer(boost::asio::io_context& ioc, config::v1::EdgeConfig config,
             std::shared_ptr<prometheus::Registry> metrics);
  ~EdgeServer();

  /// Validates the config (throws std::runtime_error naming the field) and
  /// binds every listener.
  void start();
  /// Stops accepting, lets requests in flight finish (bounded), closes
  /// idle keep-alive connections.
  asio::awaitable<void> drain();
  /// True once the broker has answered with its policy snapshot (or "none
  /// yet"): an edge reports ready only after that.
  bool ready() const;
  /// What runs, for the admin port's /status (JSON): the brokers it holds
  /// (lanes up, exchanges), the config in force, requests in flight.
  std::string status_json() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace postern::edge
