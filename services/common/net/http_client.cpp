#include "common/net/http_client.hpp"

#include <sys/socket.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <stdexcept>
#include <unordered_map>
#include <vector>

#include "common/net/beast_ws_port.hpp"
#include "common/net/body_reader.hpp"
#include "common/net/http_headers.hpp"
#include "common/net/tls.hpp"
#include "common/net/trailers.hpp"

namespace postern::net {
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using tunnel::v1::ERROR_CODE_UPSTREAM_PROTOCOL;
using tunnel::v1::ERROR_CODE_UPSTREAM_TIMEOUT;
using tunnel::v1::ERROR_CODE_UPSTREAM_UNREACHABLE;

Origin Origin::parse(std::string_view url, const std::string& ca_file) {
  Origin o;
  std::string_view rest;
  if (url.starts_with("http://") || url.starts_with("ws://")) {
    rest = url.substr(url.find("://") + 3);
  } else if (url.starts_with("https://") || url.starts_with("wss://")) {
    o.tls = true;
    rest = url.substr(url.find("://") + 3);
  } else {
    throw std::invalid_argument("URL '" + std::string(url) + "' must start with http://, https://, ws:// or wss://");
  }
  auto slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  std::string_view path = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash);
  if (authority.empty()) throw std::invalid_argument("URL '" + std::string(url) + "' has no host");
  if (authority.find('@') != std::string_view::npos) {
    throw std::invalid_argument("URL '" + std::string(url) + "' must not carry credentials");
  }
  std::string_view host = authority, port;
  if (authority.front() == '[') {
    auto close = authority.find(']');
    if (close == std::string_view::npos) throw std::invalid_argument("URL '" + std::string(url) + "' has a bad IPv6 host");
    host = authority.substr(1, close - 1);
    if (close + 1 < authority.size() && authority[close + 1] == ':') port = authority.substr(close + 2);
  } else if (auto colon = authority.rfind(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
  }
  if (host.empty()) throw std::invalid_argument("URL '" + std::string(url) + "' has no host");
  if (!port.empty()) {
    for (char c : port) {
      if (c < '0' || c > '9') throw std::invalid_argument("URL '" + std::string(url) + "' has a bad port");
    }
    if (port.size() > 5 || std::stoul(std::string(port)) > 65535 || std::stoul(std::string(port)) == 0) {
      throw std::invalid_argument("URL '" + std::string(url) + "' has a bad port");
    }
  }
  if (path.find('?') != std::string_view::npos || path.find('#') != std::string_view::npos) {
    throw std::invalid_argument("URL '" + std::string(url) + "' must not have a query or fragment");
  }
  while (!path.empty() && path.back() == '/') path.remove_suffix(1);
  o.host = std::string(host);
  o.port = port.empty() ? (o.tls ? "443" : "80") : std::string(port);
  o.base_path = std::string(path);
  if (o.tls) o.tls_context = make_client_tls(ca_file);
  o.ca_file = ca_file;
  return o;
}

namespace {

// The Host header for `o`: the client's (X-Forwarded-Host, which the edge
// sets) with preserve_host, or host with a port other than the scheme's
// default.
std::string host_header_of(const Origin& o, const tunnel::v1::RequestHead& head) {
  if (o.preserve_host) {
    for (const auto& h : head.headers()) {
      if (iequals(h.name(), "x-forwarded-host") && !h.value().empty()) return h.value();
    }
  }
  const bool default_port = (o.port == "80" && !o.tls) || (o.port == "443" && o.tls);
  const bool v6 = o.host.find(':') != std::string::npos;
  const std::string host = v6 ? "[" + o.host + "]" : o.host;
  return default_port ? host : host + ":" + o.port;
}

}  // namespace

std::string Origin::key() const { return (tls ? "https://" : "http://") + host + ":" + port; }

namespace {

struct Conn {
  std::unique_ptr<beast::tcp_stream> plain;
  std::unique_ptr<beast::ssl_stream<beast::tcp_stream>> secure;
  beast::flat_buffer buffer;
  std::chrono::steady_clock::time_point idle_since;
  bool reused = false;

  beast::tcp_stream& tcp() { return plain ? *plain : beast::get_lowest_layer(*secure); }

  // An idle connection the peer has closed (or sent unsolicited bytes on)
  // must not carry the next request.
  bool still_usable() {
    auto& sock = tcp().socket();
    if (!sock.is_open() || buffer.size() != 0) return false;
    char byte;
    ssize_t n = ::recv(sock.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
  }
};

constexpr auto kMaxIdleAge = std::chrono::seconds(30);

std::string describe(const boost::system::error_code& ec) { return ec.message(); }

}  // namespace

struct HttpClient::Pool {
  asio::any_io_executor ex;
  std::unordered_map<std::string, std::vector<std::unique_ptr<Conn>>> idle;
  std::size_t idle_count = 0;

  std::unique_ptr<Conn> take(const std::string& key) {
    auto it = idle.find(key);
    if (it == idle.end()) return nullptr;
    auto& v = it->second;
    const auto now = std::chrono::steady_clock::now();
    while (!v.empty()) {
      auto c = std::move(v.back());
      v.pop_back();
      --idle_count;
      if (now - c->idle_since < kMaxIdleAge && c->still_usable()) {
        c->reused = true;
        return c;
      }
    }
    return nullptr;
  }

  void give_back(const Origin& o, std::unique_ptr<Conn> c) {
    auto& v = idle[o.key()];
    if (v.size() >= o.max_idle) return;
    c->idle_since = std::chrono::steady_clock::now();
    v.push_back(std::move(c));
    ++idle_count;
  }

  asio::awaitable<std::unique_ptr<Conn>> connect(const Origin& o) {
    auto c = std::make_unique<Conn>();
    tcp::resolver resolver(ex);
    auto [rec, results] = co_await resolver.async_resolve(o.host, o.port, use_nothrow);
    if (rec) {
      throw ExchangeError(ERROR_CODE_UPSTREAM_UNREACHABLE,
                          "cannot resolve native host '" + o.host + "': " + describe(rec));
    }
    if (o.tls) {
      c->secure = std::make_unique<beast::ssl_stream<beast::tcp_stream>>(ex, *o.tls_context);
    } else {
      c->plain = std::make_unique<beast::tcp_stream>(ex);
    }
    auto& stream = c->tcp();
    stream.expires_after(o.connect_timeout);
    auto [cec, ep] = co_await stream.async_connect(results, use_nothrow);
    if (cec == beast::error::timeout) {
      throw ExchangeError(ERROR_CODE_UPSTREAM_TIMEOUT, "connecting to " + o.peer + " " + o.host + ":" + o.port +
                                                           " timed out after " +
                                                           std::to_string(o.connect_timeout.count()) + " ms");
    }
    if (cec) {
      throw ExchangeError(ERROR_CODE_UPSTREAM_UNREACHABLE,
                          "cannot connect to " + o.peer + " " + o.host + ":" + o.port + ": " + describe(cec));
    }
    stream.socket().set_option(tcp::no_delay(true));
    if (o.tls) {
      SSL_set_tlsext_host_name(c->secure->native_handle(), o.host.c_str());
      c->secure->set_verify_callback(ssl::host_name_verification(o.host));
      auto [hec] = co_await c->secure->async_handshake(ssl::stream_base::client, use_nothrow);
      if (hec) {
        throw ExchangeError(ERROR_CODE_UPSTREAM_UNREACHABLE,
                            "TLS handshake with " + o.peer + " " + o.host + ":" + o.port + " failed: " + describe(hec));
      }
    }
    co_return c;
  }
};

HttpClient::HttpClient(asio::any_io_executor ex) : pool_(std::make_unique<Pool>()) { pool_->ex = ex; }
HttpClient::~HttpClient() = default;
std::size_t HttpClient::idle_connections() const { return pool_->idle_count; }

namespace {

// Thrown when a reused keep-alive connection failed before anything of the
// request body was consumed: the exchange may be retried on a new one.
struct StaleConnection {};

bool method_has_body(std::string_view m) { return m == "POST" || m == "PUT" || m == "PATCH"; }

template <class Stream>
asio::awaitable<bool> run_exchange(Stream& s, Conn& c, const Origin& o, const tunnel::v1::RequestHead& head,
                                   BodySource& body, ResponseSink& sink, std::chrono::milliseconds head_timeout) {
  http::request<http::buffer_body> req;
  req.version(11);
  req.method_string(head.method());
  std::string target = o.base_path;
  if (head.target().empty() || head.target().front() != '/') target += '/';
  target += head.target();
  req.target(target);
  for (const auto& h : head.headers()) req.insert(h.name(), h.value());
  req.set(http::field::host, host_header_of(o, head));
  const bool chunked = head.content_length() < 0;
  const bool has_body = chunked || head.content_length() > 0;
  if (chunked) {
    req.chunked(true);
  } else if (head.content_length() > 0 || method_has_body(head.method())) {
    req.content_length(static_cast<std::uint64_t>(head.content_length()));
  }
  req.body().data = nullptr;
  req.body().size = 0;
  req.body().more = has_body;
  http::request_serializer<http::buffer_body> sr{req};

  auto& tcp = c.tcp();
  tcp.expires_after(o.read_timeout);
  {
    auto [ec, n] = co_await http::async_write_header(s, sr, use_nothrow);
    if (ec) {
      if (c.reused) throw StaleConnection{};
      throw ExchangeError(ERROR_CODE_UPSTREAM_UNREACHABLE,
                          "sending the request to the " + o.peer + " failed: " + describe(ec));
    }
  }
  if (has_body) {
    std::string_view chunk;
    for (;;) {
      const bool more = co_await body.next(chunk);
      if (!more) break;
      if (chunk.empty()) continue;
      req.body().data = const_cast<char*>(chunk.data());
      req.body().size = chunk.size();
      req.body().more = true;
      tcp.expires_after(o.read_timeout);
      auto [ec, n] = co_await http::async_write(s, sr, use_nothrow);
      if (ec && ec != http::error::need_buffer) {
        throw ExchangeError(ERROR_CODE_UPSTREAM_UNREACHABLE,
                            o.peer + " closed the connection while receiving the request body: " + describe(ec));
      }
    }
    const auto ec = co_await write_body_end(s, sr, req, body.trailers());
    if (ec) {
      throw ExchangeError(ERROR_CODE_UPSTREAM_UNREACHABLE,
                          o.peer + " closed the connection while receiving the request body: " + describe(ec));
    }
  }

  const bool is_head = head.method() == "HEAD";
  std::optional<http::response_parser<http::buffer_body>> parser;
  const auto wait = head_timeout.count() > 0 ? head_timeout : o.read_timeout;
  for (;;) {
    parser.emplace();
    parser->header_limit(64 * 1024);
    parser->body_limit(boost::none);
    if (is_head) parser->skip(true);
    tcp.expires_after(wait);
    auto [ec, n] = co_await http::async_read_header(s, c.buffer, *parser, use_nothrow);
    if (ec == beast::error::timeout) {
      throw ExchangeError(ERROR_CODE_UPSTREAM_TIMEOUT,
                          o.peer + " did not answer within " + std::to_string(wait.count()) + " ms");
    }
    if (ec) {
      if (c.reused && !has_body && (ec == http::error::end_of_stream || ec == asio::error::connection_reset)) {
        throw StaleConnection{};
      }
      throw ExchangeError(ec == http::error::end_of_stream || ec == asio::error::connection_reset
                              ? ERROR_CODE_UPSTREAM_UNREACHABLE
                              : ERROR_CODE_UPSTREAM_PROTOCOL,
                          o.peer + " sent no valid response head: " + describe(ec));
    }
    // Interim responses (100 Continue) are answered for the client by the
    // edge itself; they do not travel.
    if (parser->get().result_int() >= 200 || parser->get().result_int() == 101) break;
  }

  auto& res = parser->get();
  tunnel::v1::ResponseHead rh;
  rh.set_status(res.result_int());
  rh.set_reason(std::string(res.reason()));
  const auto connection = res[http::field::connection];
  for (const auto& f : res) {
    if (is_hop_by_hop(f.name_string()) || listed_in_connection(connection, f.name_string())) continue;
    auto* h = rh.add_headers();
    h->set_name(std::string(f.name_string()));
    h->set_value(std::string(f.value()));
  }
  if (auto cl = parser->content_length()) {
    rh.set_content_length(static_cast<std::int64_t>(*cl));
  } else {
    const int st = res.result_int();
    rh.set_content_length((is_head || st == 204 || st == 304) ? 0 : -1);
  }
  const bool keep_alive = res.keep_alive();
  const bool response_chunked = parser->chunked();
  const HeadCounts head_fields = count_fields(res);
  co_await sink.head(rh);

  if (!parser->is_done()) {
    // A head whose body has not started arriving goes out on its own.
    if (c.buffer.size() == 0) co_await sink.idle();
    // Beast sizes each socket read by the buffer's spare room: make it 64 KiB.
    if (c.buffer.capacity() < kWsPieceBytes) c.buffer.reserve(kWsPieceBytes);
    PieceBuffer buf(parser->content_length_remaining());
    for (;;) {
      tcp.expires_after(o.read_timeout);
      char* room = buf.prepare();
      auto [ec, got] = co_await read_body_piece(s, c.buffer, *parser, room, buf.capacity());
      buf.got(got);
      if (ec) {
        if (ec == beast::error::timeout) {
          throw ExchangeError(ERROR_CODE_UPSTREAM_TIMEOUT, o.peer + " stalled while sending the response body");
        }
        throw ExchangeError(ERROR_CODE_UPSTREAM_PROTOCOL, o.peer + " response body cut short: " + describe(ec));
      }
      if (got > 0) {
        const std::string_view piece(room, got);
        co_await sink.body(piece);
      }
      if (parser->is_done()) break;
    }
  }
  const Trailers trailers = response_chunked ? trailers_after(res, head_fields) : Trailers{};
  co_await sink.end(trailers);
  co_return keep_alive;
}

}  // namespace

asio::awaitable<void> HttpClient::exchange(const Origin& origin, const tunnel::v1::RequestHead& head, BodySource& body,
                                           ResponseSink& sink, std::chrono::milliseconds head_timeout) {
  const std::string key = origin.key();
  for (int attempt = 0;; ++attempt) {
    std::unique_ptr<Conn> conn = attempt == 0 ? pool_->take(key) : nullptr;
    if (!conn) {
      auto fresh = co_await pool_->connect(origin);
      conn = std::move(fresh);
    }
    bool keep = false;
    try {
      if (conn->plain) {
        keep = co_await run_exchange(*conn->plain, *conn, origin, head, body, sink, head_timeout);
      } else {
        keep = co_await run_exchange(*conn->secure, *conn, origin, head, body, sink, head_timeout);
      }
    } catch (const StaleConnection&) {
      if (attempt == 0) continue;
      throw ExchangeError(ERROR_CODE_UPSTREAM_UNREACHABLE, origin.peer + " closed the connection");
    }
    if (keep) pool_->give_back(origin, std::move(conn));
    co_return;
  }
}

namespace {

namespace websocket = beast::websocket;

// Fields Beast writes itself for the handshake, or that belong to one hop.
bool not_for_native_upgrade(std::string_view name) {
  return is_hop_by_hop(name) || iequals(name, "host") || iequals(name, "sec-websocket-key") ||
         iequals(name, "sec-websocket-version") || iequals(name, "sec-websocket-extensions") ||
         iequals(name, "sec-websocket-accept") || iequals(name, "content-length");
}

template <class Next>
asio::awaitable<HttpClient::WsUpgrade> ws_handshake(websocket::stream<Next>& ws, const Origin& o,
                                                    const tunnel::v1::RequestHead& head,
                                                    const WsStreamOptions& options) {
  configure_ws(ws, options);
  std::vector<std::pair<std::string, std::string>> fields;
  for (const auto& h : head.headers()) {
    if (!not_for_native_upgrade(h.name())) fields.emplace_back(h.name(), h.value());
  }
  ws.set_option(websocket::stream_base::decorator([fields](websocket::request_type& req) {
    for (const auto& [name, value] : fields) {
      if (iequals(name, "user-agent")) {
        req.set(http::field::user_agent, value);
      } else {
        req.insert(name, value);
      }
    }
  }));
  // An empty target (or just a query) leaves the origin's path as it is.
  std::string target = o.base_path;
  if (!head.target().empty() && head.target().front() != '/' && head.target().front() != '?') target += '/';
  target += head.target();
  if (target.empty() || target.front() != '/') target.insert(0, "/");
  const std::string host = host_header_of(o, head);
  websocket::response_type res;
  auto [ec] = co_await ws.async_handshake(res, host, target, use_nothrow);
  HttpClient::WsUpgrade up;
  up.head.set_status(res.result_int());
  up.head.set_reason(std::string(res.reason()));
  for (const auto& f : res) {
    if (is_hop_by_hop(f.name_string()) || iequals(f.name_string(), "sec-websocket-accept") ||
        iequals(f.name_string(), "content-length")) {
      continue;
    }
    auto* h = up.head.add_headers();
    h->set_name(std::string(f.name_string()));
    h->set_value(std::string(f.value()));
  }
  if (!ec) {
    up.head.set_content_length(0);
    up.port = std::make_unique<BeastWsPort<Next>>(std::move(ws));
    co_return up;
  }
  if (res.result_int() >= 200 && res.result_int() != 101) {
    up.body = std::move(res.body());
    up.head.set_content_length(static_cast<std::int64_t>(up.body.size()));
    co_return up;
  }
  if (ec == beast::error::timeout) {
    throw ExchangeError(ERROR_CODE_UPSTREAM_TIMEOUT, o.peer + " did not answer the WebSocket upgrade within " +
                                                         std::to_string(options.handshake_timeout.count()) + " ms");
  }
  throw ExchangeError(ERROR_CODE_UPSTREAM_PROTOCOL,
                      "WebSocket handshake with " + o.peer + " " + o.host + ":" + o.port + " failed: " + describe(ec));
}

}  // namespace

asio::awaitable<HttpClient::WsUpgrade> HttpClient::websocket(const Origin& origin, const tunnel::v1::RequestHead& head,
                                                             const WsStreamOptions& options) {
  auto conn = co_await pool_->connect(origin);
  if (conn->plain) {
    websocket::stream<beast::tcp_stream> ws(std::move(*conn->plain));
    auto up = co_await ws_handshake(ws, origin, head, options);
    co_return up;
  }
  websocket::stream<beast::ssl_stream<beast::tcp_stream>> ws(std::move(*conn->secure));
  auto up = co_await ws_handshake(ws, origin, head, options);
  co_return up;
}

}  // namespace postern::net
