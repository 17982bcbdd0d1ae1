#pragma once
// A WebSocket message crosses a tunnel stream as ws_message pieces of at
// most kWsPieceBytes (tunnel.proto, WsMessage). The same joining and
// splitting serves a session on its own stream (FramePort) and a session
// sharing one (MuxSession).

#include <algorithm>
#include <string>

#include "common/exchange.hpp"
#include "common/net/ws_relay.hpp"
#include "postern/tunnel/v1/tunnel.pb.h"

namespace postern::grpc_bridge {

/// Joins the pieces of one message at a time, up to a limit.
class WsPieceJoiner {
 public:
  explicit WsPieceJoiner(std::size_t max_message_bytes) : max_(max_message_bytes) {}

  /// Takes `piece` (its data moved from). True when `m` now holds what the
  /// reader hands on: the whole message, or, once the message passed the
  /// limit, a 1009 close (what was joined is let go). False: more to come.
  bool add(tunnel::v1::WsMessage& piece, net::WsMessage& m) {
    if (joining_.size() + piece.data().size() > max_) {
      joining_.clear();
      joining_.shrink_to_fit();
      m = net::WsMessage::close(1009, "message too big");
      return true;
    }
    if (joining_.empty() && piece.last()) {
      joining_ = std::move(*piece.mutable_data());
    } else {
      joining_.append(piece.data());
    }
    if (!piece.last()) return false;
    m.kind = piece.binary() ? net::WsMessage::Kind::binary : net::WsMessage::Kind::text;
    m.data = std::move(joining_);
    joining_.clear();
    return true;
  }

 private:
  std::size_t max_;
  std::string joining_;
};

/// Bytes of the piece of `m` that starts at `off`.
inline std::size_t ws_piece_bytes(const net::WsMessage& m, std::size_t off) {
  return std::min(kWsPieceBytes, m.data.size() - off);
}

/// Fills `piece` with the piece of `m` that starts at `off` and returns
/// where the next one starts (m.data.size() after the last). An empty
/// message is one empty, last piece.
inline std::size_t put_ws_piece(const net::WsMessage& m, std::size_t off, tunnel::v1::WsMessage& piece) {
  const std::size_t n = ws_piece_bytes(m, off);
  piece.mutable_data()->assign(m.data.data() + off, n);
  piece.set_binary(m.binary());
  off += n;
  piece.set_last(off >= m.data.size());
  return off;
}

}  // namespace postern::grpc_bridge
