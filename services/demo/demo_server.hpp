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
/// Endpoints (exact paths; HEAD works on all of them and sends headers only):
///   GET /            200 text/plain greeting
///   /headers         200 JSON {"method","target","headers":[[name,value],...]} as received
///   /echo            streams the request body back; Content-Length copied, else chunked;
///                    Content-Type copied; X-Demo-Method: <method>
///   /sink            POST/PUT: 200 JSON {"bytes":N,"sha256":"<hex>"} of the body
///   /bytes/N         N bytes, byte i = i % 251; ?chunked=1 for chunked; X-Demo-Sha256 if N <= 1 MiB
///   /status/N        status N (200-599), body "status N\n" (none for 204/304), X-Demo-Status: N
///   /slow?ms=N       waits N ms (timer), then 200 "slow\n"
///   /drip?chunks=N&ms=M&size=S&first_ms=F
///                                chunked, N chunks of S bytes, M ms apart,
///                                the first F ms after the head (default 0)
///   /multi           two Set-Cookie, two X-Custom, Cache-Control: no-store
///   anything else    404 "no such demo endpoint: <path>\n"
/// Keep-alive with a 60 s idle timeout; a malformed request gets 400 and the
/// connection closes. Bodies move in kChunkSize pieces and are never held
/// whole. /echo writes while it reads, so a client that sends its whole body
/// before reading anything can fill both directions' buffers and stall.
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
