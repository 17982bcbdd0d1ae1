#include "edge/http_connection.hpp"

#include <boost/asio/ssl.hpp>
#include <boost/beast/ssl.hpp>

#include "edge/client_stream.hpp"
#include "edge/in_flight.hpp"
#include "edge/request_handler.hpp"
#include "edge/settings.hpp"

namespace postern::edge {

namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

namespace {

// How long a connection that arrives before the broker's first snapshot
// waits for it; then it is served as it is (503: no configuration yet).
constexpr auto kFirstConfigWait = 2s;

}  // namespace

void HttpConnections::start(tcp::socket socket, std::shared_ptr<ssl::context> tls) {
  boost::system::error_code ec;
  socket.set_option(tcp::no_delay(true), ec);
  auto peer = socket.remote_endpoint(ec);
  if (tls) {
    // The stream keeps this connection's context, whatever a reload brings.
    auto& context = *tls;
    asio::co_spawn(d_.ex,
                   run(beast::ssl_stream<beast::tcp_stream>(std::move(socket), context), peer, std::move(tls),
                       WaitingConnections::Fresh(d_.waiting)),
                   [](std::exception_ptr e) { log_session_failure(e); });
  } else {
    asio::co_spawn(d_.ex,
                   run(beast::tcp_stream(std::move(socket)), peer, nullptr, WaitingConnections::Fresh(d_.waiting)),
                   [](std::exception_ptr e) { log_session_failure(e); });
  }
}

// `tls` is the stream's context, kept for as long as the stream lives.
template <class Stream>
asio::awaitable<void> HttpConnections::run(Stream stream, tcp::endpoint peer, std::shared_ptr<ssl::context> tls,
                                           WaitingConnections::Fresh fresh) {
  if constexpr (!std::is_same_v<Stream, beast::tcp_stream>) {
    beast::get_lowest_layer(stream).expires_after(d_.settings.header_timeout);
    auto [ec] = co_await stream.async_handshake(ssl::stream_base::server, use_nothrow);
    if (ec) {
      POSTERN_LOG(debug, "tls handshake failed").kv("client", peer.address().to_string()).kv("error", ec.message());
      co_return;
    }
  }
  co_await serve(stream, peer, tls != nullptr, fresh);
}

template <class Stream>
asio::awaitable<void> HttpConnections::serve(Stream& stream, const tcp::endpoint& peer, bool tls,
                                             WaitingConnections::Fresh& fresh) {
  d_.metrics.connections.Increment();
  struct ConnGauge {
    Metrics& m;
    ~ConnGauge() { m.connections.Decrement(); }
  } gauge{d_.metrics};
  const std::string client_ip = peer.address().to_string();
  beast::flat_buffer buffer;
  const std::uint64_t conn_id = d_.waiting.next_id();
  // Set once a WebSocket session took the stream over (it is moved from).
  bool upgraded = false;
  // A restarted edge listens at once but serves nothing before the
  // broker's first snapshot, normally a moment away: a client that comes
  // meanwhile waits for it (bounded) instead of getting a 503 for no API.
  if (!d_.first_config.is_set()) co_await d_.first_config.wait_for(kFirstConfigWait);
  for (bool first = true;; first = false) {
    // A draining edge still answers a new connection's first request
    // (with Connection: close): its client picked this edge before the
    // drain, and a connection closed unanswered would be a failed request.
    if (d_.draining && !first) break;
    http::request_parser<http::buffer_body> parser;
    parser.header_limit(d_.settings.max_header_bytes);
    parser.body_limit(boost::none);
    beast::get_lowest_layer(stream).expires_after(first ? d_.settings.header_timeout : d_.settings.idle_timeout);
    d_.waiting.waiting(conn_id, first, [&stream] { beast::get_lowest_layer(stream).cancel(); });
    auto [ec, n] = co_await http::async_read_header(stream, buffer, parser, use_nothrow);
    d_.waiting.not_waiting(conn_id, first);
    fresh.done();
    if (ec) {
      if (ec == http::error::end_of_stream || ec == beast::error::timeout || ec == asio::error::operation_aborted ||
          ec == asio::error::connection_reset || ec == asio::error::eof || ec == asio::ssl::error::stream_truncated) {
        break;
      }
      co_await refuse_head(stream, client_ip, ec);
      break;
    }
    ClientConnection<Stream> c{stream, buffer, parser, client_ip, tls};
    d_.in_flight.begin();
    bool keep = false;
    try {
      keep = co_await d_.handler.handle(c);
    } catch (const std::exception& e) {
      POSTERN_LOG(error, "request failed").kv("error", e.what());
    }
    d_.in_flight.end();
    upgraded = c.upgraded;
    if (!keep) break;
  }
  if (!upgraded) co_await close_stream(stream);
}

// A request head too large or malformed: 431 or 400, and the connection ends.
template <class Stream>
asio::awaitable<void> HttpConnections::refuse_head(Stream& stream, const std::string& client_ip,
                                                   const boost::system::error_code& ec) {
  const bool too_big = ec == http::error::header_limit;
  const int status = too_big ? 431 : 400;
  const std::string detail = too_big ? "request head exceeds " + std::to_string(d_.settings.max_header_bytes) + " bytes"
                                     : "malformed HTTP request: " + ec.message();
  POSTERN_LOG(info, "bad request").kv("client", client_ip).kv("status", status).kv("error", detail);
  d_.metrics.requests_by.get({"", std::to_string(status)}).Increment();
  std::string body = problem_body("bad-request", too_big ? "Request Header Fields Too Large" : "Bad Request", status,
                                  detail, {});
  co_await write_problem(stream, 11, status, "http_request_error", body, {}, false, detail);
}

}  // namespace postern::edge
