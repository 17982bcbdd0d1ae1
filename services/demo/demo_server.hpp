#pragma once
// postern-demo: the native HTTP/1.1 service used by the quick start and the
// integration tests. Every body is streamed in 64 KiB pieces, so memory stays
// flat whatever the body size.

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>

#include <cstddef>
#include <cstdint>

namespace postern::demo {

/// Size of one streamed body piece, for reads and writes alike.
inline constexpr std::size_t kChunkSize = 64 * 1024;

/// The demo HTTP server: an acceptor plus one coroutine per connection.
///
/// Endpoints: GET /, /headers, /echo, /sink, /bytes/N, /status/N, /slow,
/// /drip, /multi (see README in the brief / demo_server.cpp). Keep-alive,
/// 60 s idle timeout, malformed request -> 400 and close.
///
/// Threads: construct, listen() and start() on one thread; the io_context may
/// then be run by any number of threads (each connection lives on its own
/// strand). stop() must run on the io_context (e.g. from a signal handler).
class DemoServer {
 public:
  /// `tls` is optional: when non-null every connection is TLS. It must outlive the server.
  DemoServer(boost::asio::io_context& ioc, boost::asio::ip::tcp::endpoint endpoint,
             boost::asio::ssl::context* tls);

  /// Binds and listens. Returns the bound endpoint (port 0 becomes a real one).
  /// Throws boost::system::system_error on failure.
  boost::asio::ip::tcp::endpoint listen();

  /// Starts accepting connections; call after listen().
  void start();

  /// Stops accepting; connections already accepted carry on until done.
  void stop();

 private:
  boost::asio::awaitable<void> accept_loop();

  boost::asio::io_context& ioc_;
  boost::asio::ip::tcp::endpoint endpoint_;
  boost::asio::ssl::context* tls_;
  boost::asio::ip::tcp::acceptor acceptor_;
};

}  // namespace postern::demo
