#pragma once
// What moves through an Exchange, in the shapes the hops use:
//
//   acceptor (connector):  ExchangeBody    the request body, as a BodySource
//                          ExchangeSink    the response, as a ResponseSink
//   opener (edge):         send_body()     a BodySource uploaded as body + end
//                          read_response() response frames into a ResponseSink
//   both, after a 101:     ExchangeWsPort  the session's messages, a WsPort
//
// Data crosses on the exchange's credit: a piece waits for credit before it
// is sent, and is credited back as the local side takes it.
//
// Single-threaded: on the exchange's executor.

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "common/exchange.hpp"
#include "common/net/ws_relay.hpp"
#include "common/tunnel/endpoint.hpp"

namespace postern::tunnel {

/// The request body as it arrives (acceptor). Throws ExchangeError when the
/// far side aborts (its error code) or the lane ends (CLIENT_GONE).
class ExchangeBody final : public BodySource {
 public:
  explicit ExchangeBody(Exchange& x) : x_(x) {}
  asio::awaitable<bool> next(std::string_view& chunk) override;
  const Trailers& trailers() const override { return trailers_; }
  /// True once the request's end came (not an error, not a cut).
  bool ended() const { return ended_; }
  /// Reads and drops what is left of the body (bounded by `limit`), so
  /// that the far side is not left waiting for credit.
  asio::awaitable<void> drain(std::chrono::milliseconds limit);

 private:
  Exchange& x_;
  tv1::Frame frame_;
  Trailers trailers_;
  std::size_t pending_credit_ = 0;  // the last piece handed out, credited at the next call
  bool ended_ = false;
  bool done_ = false;
};

/// The response, written into the exchange (acceptor). Throws ExchangeError
/// (CLIENT_GONE) when the exchange is over or cut before it is all sent.
class ExchangeSink final : public ResponseSink {
 public:
  /// `bytes` (may be null) counts body bytes as each piece goes.
  explicit ExchangeSink(Exchange& x, prometheus::Counter* bytes = nullptr) : x_(x), counter_(bytes) {}
  asio::awaitable<void> head(tv1::ResponseHead& h) override;
  asio::awaitable<void> body(std::string_view chunk) override;
  asio::awaitable<void> end(const Trailers& trailers) override;
  unsigned status() const { return status_; }
  bool ended() const { return ended_; }
  /// Body bytes sent.
  std::uint64_t bytes() const { return bytes_; }

 private:
  void check() const;
  Exchange& x_;
  prometheus::Counter* counter_;
  unsigned status_ = 0;
  bool ended_ = false;
  std::uint64_t bytes_ = 0;
};

/// Uploads `body` after a request head (opener): body pieces on credit,
/// then end with the trailers. False when the exchange ended first (the far
/// side answered early, or it was cut): the caller reads what it said.
asio::awaitable<bool> send_body(Exchange& x, BodySource& body);

/// What read_response() saw.
struct ResponseRead {
  bool head = false;   ///< a response head reached the sink
  bool ended = false;  ///< the response's end reached the sink
  std::optional<tv1::Error> error;  ///< the far side's error, if it sent one
};

/// Reads the response (opener): head, body, end into `sink`, crediting each
/// piece as the sink takes it; a WebSocket 101 stops after the head (the
/// session goes on through ExchangeWsPort). Frames out of order abandon the
/// exchange (UPSTREAM_PROTOCOL) and throw. Errors from the far side are
/// returned, not thrown; a cut lane returns with what came.
asio::awaitable<void> read_response(Exchange& x, ResponseSink& sink, bool websocket, ResponseRead& out);

/// A WebSocket session on an exchange, once the 101 went (acceptor) or came
/// (opener). Messages cross as ws_message pieces of at most 64 KiB, joined
/// here up to `max_message_bytes` (beyond: a 1009 close).
class ExchangeWsPort final : public net::WsPort {
 public:
  ExchangeWsPort(std::shared_ptr<Exchange> x, std::size_t max_message_bytes)
      : x_(std::move(x)), max_(max_message_bytes) {}
  asio::awaitable<void> read(net::WsMessage& m) override;
  asio::awaitable<bool> write(const net::WsMessage& m) override;
  void abort() override;
  /// After the relay: waits (at most `limit`) for the far side's close once
  /// ours went, crediting what still comes so the sender gets to its close.
  asio::awaitable<void> drain(std::chrono::milliseconds limit);
  Exchange& exchange() { return *x_; }

 private:
  std::shared_ptr<Exchange> x_;
  std::size_t max_;
  std::string joining_;
  bool close_sent_ = false, close_received_ = false;
};

}  // namespace postern::tunnel
