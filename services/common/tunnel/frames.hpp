#pragma once
// Tunnel frames (tunnel.proto, Frame): building them, naming them, and the
// order an exchange's frames must follow in each direction. Pure.

#include <cstdint>
#include <string>
#include <string_view>

#include "postern/tunnel/v1/tunnel.pb.h"

namespace postern::tunnel {

namespace tv1 = ::postern::tunnel::v1;

tv1::Frame error_frame(std::uint64_t exchange, tv1::ErrorCode code, std::string message);
tv1::Frame credit_frame(std::uint64_t exchange, std::uint64_t bytes);
tv1::Frame end_frame(std::uint64_t exchange);

/// The name of a frame's kind as the proto spells it ("response_head").
std::string frame_kind(const tv1::Frame& f);

/// Body or WebSocket message bytes a frame carries (what credit counts).
inline std::size_t data_bytes(const tv1::Frame& f) {
  if (f.kind_case() == tv1::Frame::kBody) return f.body().size();
  if (f.kind_case() == tv1::Frame::kWsMessage) return f.ws_message().data().size();
  return 0;
}

/// The order of one direction of one exchange. `accept()` checks the next
/// frame and returns what is wrong with it ("" when it is in order):
///   request:  request_head, then body* end, or (after the far side's 101)
///             ws_message* ws_close;
///   response: response_head, then body* end, or (a 101 to a WebSocket
///             request) ws_message* ws_close.
/// credit and error may come at any point (after an error, nothing).
class Direction {
 public:
  enum class Side { request, response };
  explicit Direction(Side side) : side_(side) {}

  std::string accept(const tv1::Frame& f);
  /// The response direction answered a WebSocket request with 101: both
  /// directions carry messages from now on.
  void upgrade() { upgraded_ = true; }
  bool upgraded() const { return upgraded_; }
  /// The request opened a WebSocket session (its head had websocket set).
  bool websocket() const { return websocket_; }
  void set_websocket(bool w) { websocket_ = w; }
  /// This direction ended: end, ws_close or error seen.
  bool ended() const { return state_ == State::ended; }
  bool started() const { return state_ != State::head; }

 private:
  enum class State { head, body, messages, ended };
  Side side_;
  State state_ = State::head;
  bool websocket_ = false;
  bool upgraded_ = false;
};

}  // namespace postern::tunnel
