#include "common/tunnel/frames.hpp"

namespace postern::tunnel {

tv1::Frame error_frame(std::uint64_t exchange, tv1::ErrorCode code, std::string message) {
  tv1::Frame f;
  f.set_exchange(exchange);
  f.mutable_error()->set_code(code);
  f.mutable_error()->set_message(std::move(message));
  return f;
}

tv1::Frame credit_frame(std::uint64_t exchange, std::uint64_t bytes) {
  tv1::Frame f;
  f.set_exchange(exchange);
  f.set_credit(bytes);
  return f;
}

tv1::Frame end_frame(std::uint64_t exchange) {
  tv1::Frame f;
  f.set_exchange(exchange);
  f.mutable_end();
  return f;
}

std::string frame_kind(const tv1::Frame& f) {
  const auto* field = tv1::Frame::descriptor()->FindFieldByNumber(static_cast<int>(f.kind_case()));
  return field ? field->name() : std::string("empty");
}

std::string Direction::accept(const tv1::Frame& f) {
  const auto kind = f.kind_case();
  if (state_ == State::ended) {
    // A late credit for bytes already sent is harmless; an error after the
    // end lets go of the other direction (the client went away while the
    // response was still coming).
    if (kind == tv1::Frame::kCredit || kind == tv1::Frame::kError) return {};
    return "a " + frame_kind(f) + " frame after the " + (side_ == Side::request ? "request" : "response") + "'s end";
  }
  if (kind == tv1::Frame::kCredit) return {};
  if (kind == tv1::Frame::kError) {
    state_ = State::ended;
    return {};
  }
  const bool request = side_ == Side::request;
  if (state_ != State::head && (kind == tv1::Frame::kRequestHead || kind == tv1::Frame::kResponseHead)) {
    return std::string("a second ") + (kind == tv1::Frame::kRequestHead ? "request" : "response") + " head";
  }
  switch (state_) {
    case State::head:
      if (request ? kind != tv1::Frame::kRequestHead : kind != tv1::Frame::kResponseHead) {
        return "a " + frame_kind(f) + " frame before the " + (request ? "request" : "response") + " head";
      }
      if (request) {
        websocket_ = f.request_head().websocket();
        state_ = websocket_ ? State::messages : State::body;
      } else {
        upgraded_ = websocket_ && f.response_head().status() == 101;
        state_ = upgraded_ ? State::messages : State::body;
      }
      return {};
    case State::body:
      if (kind == tv1::Frame::kBody) return {};
      if (kind == tv1::Frame::kEnd) {
        state_ = State::ended;
        return {};
      }
      return "a " + frame_kind(f) + " frame in " + (request ? "a request" : "a response") + " body";
    case State::messages:
      // A WebSocket request has no body; its messages may go only once the
      // far side answered 101 (upgrade()).
      if (kind == tv1::Frame::kEnd && request && !upgraded_) {
        state_ = State::ended;  // an upgrade request's empty body
        return {};
      }
      if (kind == tv1::Frame::kWsMessage || kind == tv1::Frame::kWsClose) {
        if (request && !upgraded_) return "a " + frame_kind(f) + " frame before the 101";
        if (kind == tv1::Frame::kWsClose) state_ = State::ended;
        return {};
      }
      return "a " + frame_kind(f) + " frame in a WebSocket session";
    case State::ended:
      break;
  }
  return {};
}

}  // namespace postern::tunnel
