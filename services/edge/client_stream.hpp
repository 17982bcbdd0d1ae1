#pragma once
// What the edge's roles do with a client connection, whatever its stream
// (Beast's tcp_stream, or an ssl_stream over one): the request body as a
// BodySource, the response as a ResponseSink, and the responses the edge
// writes itself (problem+json errors, policy refusals). Heavy (Beast
// templates): include it only in the edge's own .cpp files.
//
// Single-threaded: the edge's executor.

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

#include "common/exchange.hpp"
#include "common/net/body_reader.hpp"
#include "common/net/http_headers.hpp"
#include "common/net/trailers.hpp"
#include "common/observability/log.hpp"
#include "common/policy/engine.hpp"
#include "edge/metrics.hpp"

namespace postern::edge {

namespace beast = boost::beast;
namespace http = beast::http;
using Clock = std::chrono::steady_clock;

/// One request's view of its client connection.
template <class Stream>
struct ClientConnection {
  Stream& stream;
  beast::flat_buffer& buffer;
  http::request_parser<http::buffer_body>& parser;
  const std::string& peer_ip;
  bool tls = false;
  /// Set once a WebSocket session took the stream over (it is moved from).
  bool upgraded = false;
};

/// The request body as it streams from the client.
template <class Stream>
struct ClientBody final : BodySource {
  Stream& stream;
  beast::flat_buffer& buffer;
  http::request_parser<http::buffer_body>& parser;
  Clock::duration timeout;
  Metrics& metrics;
  net::PieceBuffer buf;
  net::HeadCounts head_fields;
  Trailers trailers_;
  ClientBody(Stream& s, beast::flat_buffer& b, http::request_parser<http::buffer_body>& p, Clock::duration t,
             Metrics& m)
      : stream(s), buffer(b), parser(p), timeout(t), metrics(m), buf(p.content_length_remaining()),
        head_fields(net::count_fields(p.get())) {}

  const Trailers& trailers() const override { return trailers_; }

  asio::awaitable<bool> next(std::string_view& chunk) override {
    // Beast sizes each socket read by the buffer's spare room (512 bytes
    // at least): give a streaming body 64 KiB, idle connections none.
    if (buffer.capacity() < kWsPieceBytes) buffer.reserve(kWsPieceBytes);
    while (!parser.is_done()) {
      beast::get_lowest_layer(stream).expires_after(timeout);
      char* room = buf.prepare();
      auto [ec, got] = co_await net::read_body_piece(stream, buffer, parser, room, buf.capacity());
      buf.got(got);
      if (ec) {
        if (ec == http::error::end_of_stream || ec == asio::error::connection_reset || ec == beast::error::timeout ||
            ec == asio::error::eof || ec == asio::ssl::error::stream_truncated) {
          throw ExchangeError(tunnel::v1::ERROR_CODE_CLIENT_GONE, "client went away while sending the body");
        }
        throw ExchangeError(tunnel::v1::ERROR_CODE_BAD_REQUEST, "malformed request body: " + ec.message());
      }
      if (got > 0) {
        metrics.bytes_in.Increment(static_cast<double>(got));
        chunk = std::string_view(room, got);
        co_return true;
      }
    }
    if (parser.chunked()) trailers_ = net::trailers_after(parser.get(), head_fields);
    co_return false;
  }
};

/// The response as it goes to the client: the head is held until the
/// first body piece, so that both leave in one write.
template <class Stream>
struct ClientSink final : ResponseSink {
  Stream& stream;
  unsigned version;
  bool keep_alive;
  bool head_request;
  std::string request_id;
  Clock::duration timeout;
  Metrics& metrics;
  std::optional<http::response<http::buffer_body>> res;
  std::optional<http::response_serializer<http::buffer_body>> sr;
  unsigned status = 0;
  bool no_body = false;
  bool head_pending = false;

  ClientSink(Stream& s, unsigned v, bool ka, bool head_req, std::string rid, Clock::duration t, Metrics& m)
      : stream(s), version(v), keep_alive(ka), head_request(head_req), request_id(std::move(rid)), timeout(t),
        metrics(m) {}

  asio::awaitable<void> head(tunnel::v1::ResponseHead& h) override {
    started_ = true;
    status = h.status();
    res.emplace();
    res->version(version);
    res->result(h.status());
    if (!h.reason().empty()) res->reason(h.reason());
    bool has_request_id = false;
    for (const auto& hd : h.headers()) {
      if (net::is_hop_by_hop(hd.name())) continue;
      if (net::iequals(hd.name(), "x-request-id")) has_request_id = true;
      res->insert(hd.name(), hd.value());
    }
    if (!has_request_id) res->set("X-Request-Id", request_id);
    no_body = head_request || status == 204 || status == 304 || status < 200;
    if (h.content_length() >= 0) {
      if (!(status == 204 || status == 304 || status < 200)) res->content_length(static_cast<std::uint64_t>(h.content_length()));
    } else if (!no_body) {
      if (version >= 11) {
        res->chunked(true);
      } else {
        keep_alive = false;
      }
    }
    res->keep_alive(keep_alive);
    res->body().data = nullptr;
    res->body().size = 0;
    res->body().more = !no_body;
    sr.emplace(*res);
    // Held until the first body piece (the serializer writes both in one
    // go), the end, or idle().
    head_pending = true;
    co_return;
  }

  asio::awaitable<void> idle() override {
    if (!head_pending) co_return;
    head_pending = false;
    beast::get_lowest_layer(stream).expires_after(timeout);
    auto [ec, n] = co_await http::async_write_header(stream, *sr, use_nothrow);
    if (ec) throw ExchangeError(tunnel::v1::ERROR_CODE_CLIENT_GONE, "client went away: " + ec.message());
  }

  asio::awaitable<void> body(std::string_view chunk) override {
    if (no_body || chunk.empty()) co_return;
    head_pending = false;  // the serializer writes it with this piece
    res->body().data = const_cast<char*>(chunk.data());
    res->body().size = chunk.size();
    res->body().more = true;
    beast::get_lowest_layer(stream).expires_after(timeout);
    auto [ec, n] = co_await http::async_write(stream, *sr, use_nothrow);
    if (ec && ec != http::error::need_buffer) {
      throw ExchangeError(tunnel::v1::ERROR_CODE_CLIENT_GONE, "client went away: " + ec.message());
    }
    metrics.bytes_out.Increment(static_cast<double>(chunk.size()));
  }

  asio::awaitable<void> end(const Trailers& trailers) override {
    // A hand-written last chunk (with trailers) cannot carry the head.
    if (no_body || (res->chunked() && !trailers.empty())) co_await idle();
    if (no_body) co_return;
    head_pending = false;  // the serializer writes it with the body's end
    beast::get_lowest_layer(stream).expires_after(timeout);
    const auto ec = co_await net::write_body_end(stream, *sr, *res, trailers);
    if (ec && ec != http::error::need_buffer) {
      throw ExchangeError(tunnel::v1::ERROR_CODE_CLIENT_GONE, "client went away: " + ec.message());
    }
  }
};

/// Writes a problem+json error response; the caller decides on keep-alive.
template <class Stream>
// Non-trivial arguments by reference: GCC 12 destroys temporaries in a
// co_await full-expression twice, so callers pass named values.
asio::awaitable<bool> write_problem(Stream& stream, unsigned version, int status, std::string_view type_error,
                                    std::string& body, std::string_view request_id, bool keep_alive,
                                    std::string_view detail, std::string_view upgrade = {},
                                    const std::vector<std::pair<std::string, std::string>>* extra = nullptr) {
  http::response<http::string_body> res;
  if (extra) {
    for (const auto& [name, value] : *extra) res.insert(name, value);
  }
  // 426 names the protocol to switch to (RFC 9110 15.5.22).
  if (!upgrade.empty()) res.set(http::field::upgrade, upgrade);
  res.version(version);
  res.result(status);
  res.set(http::field::content_type, "application/problem+json");
  res.set(http::field::cache_control, "no-store");
  res.set(http::field::date, net::http_date());
  std::string ps = "postern-edge; error=" + std::string(type_error) + "; details=\"";
  for (char c : detail) {
    if (c == '"' || c == '\\') ps += '\\';
    if (static_cast<unsigned char>(c) >= 0x20) ps += c;
  }
  ps += '"';
  res.set("Proxy-Status", ps);
  if (!request_id.empty()) res.set("X-Request-Id", request_id);
  res.keep_alive(keep_alive);
  res.body() = std::move(body);
  res.prepare_payload();
  beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(10));
  auto [ec, n] = co_await http::async_write(stream, res, use_nothrow);
  co_return !ec;
}

template <class Stream>
asio::awaitable<bool> write_error(Stream& stream, unsigned version, const ExchangeError& e,
                                  std::string_view request_id, bool keep_alive, std::string_view api = {},
                                  const std::vector<std::pair<std::string, std::string>>* extra = nullptr) {
  // The API the client called, never the alias or host behind it.
  std::string body = problem_json(e.code(), e.what(), request_id, api.empty() ? "" : "api", api);
  const std::string_view detail = e.what();
  const bool written = co_await write_problem(stream, version, http_status(e.code()), proxy_status_error(e.code()),
                                              body, request_id, keep_alive, detail, {}, extra);
  co_return written;
}

/// Ends a connection the edge is done with: TLS close_notify (bounded), then
/// the socket.
template <class Stream>
asio::awaitable<void> close_stream(Stream& stream) {
  if constexpr (std::is_same_v<Stream, beast::tcp_stream>) {
    boost::system::error_code ec;
    stream.socket().shutdown(asio::ip::tcp::socket::shutdown_send, ec);
    stream.close();
  } else {
    beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(2));
    co_await stream.async_shutdown(use_nothrow);
    beast::get_lowest_layer(stream).close();
  }
  co_return;
}

/// A response a policy decided on: head and problem+json body.
template <class Stream>
asio::awaitable<void> write_rejection(Stream& stream, unsigned version, const policy::Verdict& verdict,
                                      const std::string& request_id, bool keep_alive,
                                      const std::vector<std::pair<std::string, std::string>>* extra = nullptr) {
  std::string body;
  const auto h = policy::rejection(verdict, request_id, body);
  http::response<http::string_body> res;
  res.version(version);
  res.result(h.status());
  for (const auto& f : h.headers()) res.insert(f.name(), f.value());
  // A browser script reads the refusal too (CORS).
  if (extra) {
    for (const auto& [name, value] : *extra) res.insert(name, value);
  }
  res.set(http::field::date, net::http_date());
  res.set("X-Request-Id", request_id);
  res.keep_alive(keep_alive);
  res.body() = std::move(body);
  res.prepare_payload();
  beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(10));
  auto [ec, n] = co_await http::async_write(stream, res, use_nothrow);
  (void)ec;
}

/// A problem+json body (RFC 9457) as the edge writes its own: `detail` is
/// escaped, `request_id` (left out when empty) is not.
inline std::string problem_body(std::string_view slug, std::string_view title, int status, std::string_view detail,
                                std::string_view request_id) {
  std::string body = "{\"type\":\"https://postern.dev/problems/";
  body += slug;
  body += "\",\"title\":\"";
  body += title;
  body += "\",\"status\":" + std::to_string(status) + ",\"detail\":\"";
  log::json_escape(body, detail);
  body += '"';
  if (!request_id.empty()) {
    body += ",\"request_id\":\"";
    body += request_id;
    body += '"';
  }
  body += "}\n";
  return body;
}

/// The completion of a connection's or a session's coroutine: what escaped
/// it is logged.
inline void log_session_failure(std::exception_ptr e) {
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    POSTERN_LOG(error, "session failed").kv("error", ex.what());
  }
}

}  // namespace postern::edge
