#include "common/tunnel/exchange_io.hpp"

#include <prometheus/counter.h>

#include <algorithm>

namespace postern::tunnel {

namespace {

[[noreturn]] void throw_gone(const Exchange& x) {
  throw ExchangeError(tv1::ERROR_CODE_CLIENT_GONE,
                      x.cut_reason().empty() ? "the exchange is over" : "the exchange was cut: " + x.cut_reason());
}

}  // namespace

// ------------------------------------------------------------ ExchangeBody

asio::awaitable<bool> ExchangeBody::next(std::string_view& chunk) {
  if (pending_credit_ > 0) {
    x_.consumed(pending_credit_);
    pending_credit_ = 0;
  }
  if (done_) co_return false;
  for (;;) {
    const bool got = co_await x_.next(frame_);
    if (!got) throw ExchangeError(tv1::ERROR_CODE_CLIENT_GONE, "the request was cut: " + x_.cut_reason());
    switch (frame_.kind_case()) {
      case tv1::Frame::kBody:
        chunk = frame_.body();
        pending_credit_ = chunk.size();
        co_return true;
      case tv1::Frame::kEnd:
        done_ = ended_ = true;
        trailers_ = std::move(*frame_.mutable_end()->mutable_trailers());
        co_return false;
      case tv1::Frame::kError:
        done_ = true;
        throw ExchangeError(frame_.error().code(), "request aborted upstream: " + frame_.error().message());
      default:
        done_ = true;
        throw ExchangeError(tv1::ERROR_CODE_UPSTREAM_PROTOCOL, "a " + frame_kind(frame_) + " frame in a request body");
    }
  }
}

asio::awaitable<void> ExchangeBody::drain(std::chrono::milliseconds limit) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (!done_ && std::chrono::steady_clock::now() < until) {
    std::string_view ignored;
    try {
      const bool more = co_await next(ignored);  // (GCC 12: no co_await in a condition)
      if (!more) break;
    } catch (const ExchangeError&) {
      break;
    }
  }
}

// ------------------------------------------------------------ ExchangeSink

void ExchangeSink::check() const {
  if (!x_.usable()) throw_gone(x_);
}

asio::awaitable<void> ExchangeSink::head(tv1::ResponseHead& h) {
  check();
  started_ = true;
  status_ = h.status();
  tv1::Frame f;
  *f.mutable_response_head() = std::move(h);
  x_.send(std::move(f));
  co_return;
}

asio::awaitable<void> ExchangeSink::body(std::string_view chunk) {
  while (!chunk.empty()) {
    const std::size_t n = std::min(chunk.size(), kBodyPieceBytes);
    co_await x_.take_credit(n);
    check();
    tv1::Frame f;
    f.mutable_body()->assign(chunk.data(), n);
    x_.send(std::move(f));
    chunk.remove_prefix(n);
    bytes_ += n;
    if (counter_) counter_->Increment(static_cast<double>(n));
  }
}

asio::awaitable<void> ExchangeSink::end(const Trailers& trailers) {
  check();
  tv1::Frame f;
  *f.mutable_end()->mutable_trailers() = trailers;
  x_.send(std::move(f));
  ended_ = true;
  co_return;
}

// ------------------------------------------------------------ opener side

asio::awaitable<bool> send_body(Exchange& x, BodySource& body) {
  std::string_view chunk;
  for (;;) {
    const bool more = co_await body.next(chunk);
    if (!more) break;
    while (!chunk.empty()) {
      const std::size_t n = std::min(chunk.size(), kBodyPieceBytes);
      co_await x.take_credit(n);
      if (!x.usable() || x.remote_ended()) co_return false;
      tv1::Frame f;
      f.mutable_body()->assign(chunk.data(), n);
      x.send(std::move(f));
      chunk.remove_prefix(n);
    }
  }
  if (!x.usable()) co_return false;
  tv1::Frame f;
  *f.mutable_end()->mutable_trailers() = body.trailers();
  x.send(std::move(f));
  co_return true;
}

asio::awaitable<void> read_response(Exchange& x, ResponseSink& sink, bool websocket, ResponseRead& out) {
  Direction dir(Direction::Side::response);
  dir.set_websocket(websocket);
  tv1::Frame f;
  for (;;) {
    const bool got = co_await x.next(f);
    if (!got) co_return;
    if (std::string wrong = dir.accept(f); !wrong.empty()) {
      x.abandon(tv1::ERROR_CODE_UPSTREAM_PROTOCOL, "out of order: " + wrong);
      throw ExchangeError(tv1::ERROR_CODE_UPSTREAM_PROTOCOL, "the tunnel sent " + wrong);
    }
    switch (f.kind_case()) {
      case tv1::Frame::kError:
        out.error = std::move(*f.mutable_error());
        co_return;
      case tv1::Frame::kResponseHead:
        out.head = true;
        co_await sink.head(*f.mutable_response_head());
        if (dir.upgraded()) co_return;
        if (!x.ready()) co_await sink.idle();
        continue;
      case tv1::Frame::kBody: {
        const std::size_t n = f.body().size();
        co_await sink.body(f.body());
        x.consumed(n);
        continue;
      }
      case tv1::Frame::kEnd:
        co_await sink.end(f.end().trailers());
        out.ended = true;
        co_return;
      default:
        continue;
    }
  }
}

// ------------------------------------------------------------ ExchangeWsPort

asio::awaitable<void> ExchangeWsPort::read(net::WsMessage& m) {
  for (;;) {
    tv1::Frame f;
    const bool got = co_await x_->next(f);
    if (!got) {
      m = net::WsMessage::close(1006, "the tunnel lane ended");
      co_return;
    }
    switch (f.kind_case()) {
      case tv1::Frame::kWsMessage: {
        auto& piece = *f.mutable_ws_message();
        x_->consumed(piece.data().size());
        if (joining_.size() + piece.data().size() > max_) {
          joining_.clear();
          joining_.shrink_to_fit();
          m = net::WsMessage::close(1009, "message too big");
          co_return;
        }
        if (joining_.empty() && piece.last()) {
          joining_ = std::move(*piece.mutable_data());
        } else {
          joining_.append(piece.data());
        }
        if (!piece.last()) continue;
        m.kind = piece.binary() ? net::WsMessage::Kind::binary : net::WsMessage::Kind::text;
        m.data = std::move(joining_);
        joining_.clear();
        co_return;
      }
      case tv1::Frame::kWsClose:
        close_received_ = true;
        m = net::WsMessage::close(static_cast<std::uint16_t>(f.ws_close().code()), f.ws_close().reason());
        co_return;
      case tv1::Frame::kError:
        m = net::WsMessage::close(1006, f.error().message());
        co_return;
      default:
        continue;  // nothing else belongs in a session
    }
  }
}

asio::awaitable<bool> ExchangeWsPort::write(const net::WsMessage& m) {
  if (m.is_close()) {
    if (close_sent_) co_return true;
    close_sent_ = true;
    tv1::Frame f;
    f.mutable_ws_close()->set_code(m.code);
    f.mutable_ws_close()->set_reason(m.data);
    x_->send(std::move(f));
    co_return x_->usable() || x_->over();
  }
  if (close_sent_ || !x_->usable()) co_return false;
  std::size_t off = 0;
  do {
    const std::size_t n = std::min(kWsPieceBytes, m.data.size() - off);
    co_await x_->take_credit(n);
    if (!x_->usable()) co_return false;
    tv1::Frame f;
    auto* piece = f.mutable_ws_message();
    piece->mutable_data()->assign(m.data.data() + off, n);
    piece->set_binary(m.binary());
    off += n;
    piece->set_last(off >= m.data.size());
    x_->send(std::move(f));
  } while (off < m.data.size());
  co_return true;
}

void ExchangeWsPort::abort() { x_->abandon(tv1::ERROR_CODE_CLIENT_GONE, "the session was cut"); }

asio::awaitable<void> ExchangeWsPort::drain(std::chrono::milliseconds limit) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (close_sent_ && !close_received_ && !x_->over()) {
    if (!x_->ready()) {
      const auto now = std::chrono::steady_clock::now();
      if (now >= until) break;
      const bool came = co_await x_->wait(until - now);
      if (!came) break;  // the limit passed, or the lane ended
    }
    tv1::Frame f;
    const bool got = co_await x_->next(f);
    if (!got) break;
    // The rest of a message still coming (one past our limit, say) is
    // credited as it is let go, so that its sender gets to our close.
    if (f.has_ws_message()) x_->consumed(f.ws_message().data().size());
    if (f.has_ws_close() || f.has_error()) close_received_ = true;
  }
}

}  // namespace postern::tunnel
