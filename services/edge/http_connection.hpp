#pragma once
// One client connection at the edge: the TLS handshake, then HTTP/1.1
// requests one after another (keep-alive) until the client, a timeout, an
// error, a WebSocket upgrade or a drain ends it. Each request head is read
// here, with its limits; the request handler does the rest.
//
// Single-threaded: the edge's executor.

#include <boost/asio/ip/tcp.hpp>
#include <memory>
#include <string>

#include "common/event.hpp"
#include "edge/listener.hpp"

namespace boost::asio::ssl {
class context;
}

namespace postern::edge {

struct Metrics;
struct Settings;
class InFlight;
class RequestHandler;

class HttpConnections {
 public:
  struct Deps {
    asio::any_io_executor ex;
    const Settings& settings;
    Metrics& metrics;
    WaitingConnections& waiting;
    InFlight& in_flight;
    RequestHandler& handler;
    /// Set once the broker's first policy snapshot arrived (or it said
    /// there is none yet).
    Event& first_config;
    const bool& draining;
  };

  explicit HttpConnections(Deps deps) : d_(std::move(deps)) {}

  /// Serves a connection a listener accepted, in a coroutine of its own;
  /// `tls`: its listener's context (null: plain).
  void start(asio::ip::tcp::socket socket, std::shared_ptr<asio::ssl::context> tls);

 private:
  template <class Stream>
  asio::awaitable<void> run(Stream stream, asio::ip::tcp::endpoint peer, std::shared_ptr<asio::ssl::context> tls,
                            WaitingConnections::Fresh fresh);
  template <class Stream>
  asio::awaitable<void> serve(Stream& stream, const asio::ip::tcp::endpoint& peer, bool tls,
                              WaitingConnections::Fresh& fresh);
  template <class Stream>
  asio::awaitable<void> refuse_head(Stream& stream, const std::string& client_ip, const boost::system::error_code& ec);

  Deps d_;
};

}  // namespace postern::edge
