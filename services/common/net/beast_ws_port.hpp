#pragma once
// A WsPort over a Beast WebSocket stream (plain or TLS): the client's side
// at the edge, the native service's side at the connector and a DMZ-local
// upstream's side at the edge. Heavy (Beast WebSocket): include it only in
// the .cpp files that open WebSocket streams.

#include <boost/beast/core.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>

#include "common/net/ws_relay.hpp"

namespace postern::net {

/// Applies the options: message limit, Beast's own timeouts with keep-alive
/// pings (the TCP stream's expiry is switched off, as Beast requires).
template <class WsStream>
void configure_ws(WsStream& ws, const WsStreamOptions& o) {
  namespace websocket = boost::beast::websocket;
  boost::beast::get_lowest_layer(ws).expires_never();
  websocket::stream_base::timeout t;
  t.handshake_timeout = o.handshake_timeout;
  t.idle_timeout = o.ping_interval.count() > 0 ? 2 * o.ping_interval : std::chrono::milliseconds(0);
  if (o.ping_interval.count() <= 0) t.idle_timeout = websocket::stream_base::none();
  t.keep_alive_pings = o.ping_interval.count() > 0;
  ws.set_option(t);
  ws.read_message_max(o.max_message_bytes);
  ws.auto_fragment(false);
}

template <class NextLayer>
class BeastWsPort final : public WsPort {
 public:
  using Stream = boost::beast::websocket::stream<NextLayer>;
  explicit BeastWsPort(Stream ws) : ws_(std::move(ws)) {}

  Stream& ws() { return ws_; }

  asio::awaitable<void> read(WsMessage& m) override {
    namespace websocket = boost::beast::websocket;
    buffer_.clear();
    // An idle session waits for its next message with a small buffer: the
    // first piece is read into at most kFirstPiece bytes (a whole-message
    // read would set 1536 aside for every waiting session), the rest as
    // its frames announce it (Beast prepares what the frame has left).
    boost::system::error_code ec;
    std::size_t limit = kFirstPiece;
    do {
      auto [e, n] = co_await ws_.async_read_some(buffer_, limit, use_nothrow);
      ec = e;
      limit = 0;  // no limit
    } while (!ec && !ws_.is_message_done());
    if (!ec) {
      m.kind = ws_.got_text() ? WsMessage::Kind::text : WsMessage::Kind::binary;
      m.data = boost::beast::buffers_to_string(buffer_.data());
      buffer_.clear();
      buffer_.shrink_to_fit();
      co_return;
    }
    if (close_sent_ && sent_code_ != 0 && ec != websocket::error::closed) {
      // Our close is under way (Beast ends a pending read then): the
      // peer's answer is its echo.
      const auto& r = ws_.reason();
      if (r.code != websocket::close_code::none) {
        m = WsMessage::close(static_cast<std::uint16_t>(r.code), std::string(r.reason.data(), r.reason.size()));
      } else {
        m = WsMessage::close(sent_code_, sent_reason_);
      }
    } else if (ec == websocket::error::closed) {
      const auto& r = ws_.reason();
      const std::uint16_t code = r.code == websocket::close_code::none ? 1005 : static_cast<std::uint16_t>(r.code);
      m = WsMessage::close(code, std::string(r.reason.data(), r.reason.size()));
    } else if (ec == websocket::error::message_too_big) {
      // Beast has sent the peer a 1009 close already.
      close_sent_ = true;
      m = WsMessage::close(1009, "message too big");
    } else {
      m = WsMessage::close(1006, ec.message());
    }
    buffer_.clear();
    buffer_.shrink_to_fit();
  }

  asio::awaitable<bool> write(const WsMessage& m) override {
    namespace websocket = boost::beast::websocket;
    if (m.is_close()) {
      if (close_sent_ || !ws_.is_open()) co_return true;
      close_sent_ = true;
      sent_code_ = m.code;
      websocket::close_reason cr;
      cr.code = m.code;
      const std::string reason = close_reason(m.data);
      sent_reason_ = reason;
      cr.reason = reason.c_str();
      auto [ec] = co_await ws_.async_close(cr, use_nothrow);
      co_return !ec;
    }
    if (close_sent_ || !ws_.is_open()) co_return false;
    ws_.binary(m.binary());
    auto [ec, n] = co_await ws_.async_write(asio::buffer(m.data), use_nothrow);
    co_return !ec;
  }

  void abort() override {
    boost::system::error_code ec;
    boost::beast::get_lowest_layer(ws_).socket().close(ec);
  }

 private:
  static constexpr std::size_t kFirstPiece = 256;
  Stream ws_;
  boost::beast::flat_buffer buffer_;
  bool close_sent_ = false;
  std::uint16_t sent_code_ = 0;
  std::string sent_reason_;
};

}  // namespace postern::net
