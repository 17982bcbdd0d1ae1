#pragma once
// Coalesced tunnel frames (Frame.then in tunnel.proto): frames that are ready
// together cross in one gRPC message. FrameReader hands them out one at a
// time, so code that reads frames sees the same sequence either way;
// FrameBatch gathers frames to send as one message.

#include <cstddef>
#include <vector>

#include "common/grpc/bridge.hpp"
#include "postern/tunnel/v1/tunnel.pb.h"

namespace postern::grpc_bridge {

/// Moves the frames that `f` carries in `then` (at any depth) to the back of
/// `out`, in order, leaving `f` a single frame.
void split_frames(tunnel::v1::Frame& f, std::vector<tunnel::v1::Frame>& out);

/// Reads one frame at a time from a stream of (possibly coalesced) frames.
/// Use from one coroutine at a time, like the stream's Read.
class FrameReader {
 public:
  /// The next frame: one already received, or the first of the next
  /// message. False when the stream has ended (nothing buffered is lost:
  /// buffered frames are handed out first).
  template <class Stream>
  asio::awaitable<bool> read(Stream& stream, tunnel::v1::Frame& out) {
    if (next_ < buffered_.size()) {
      out = std::move(buffered_[next_++]);
      if (next_ == buffered_.size()) {
        buffered_.clear();
        next_ = 0;
      }
      co_return true;
    }
    out.Clear();
    const bool ok = co_await grpc_bridge::read(stream, out);
    if (ok) split_frames(out, buffered_);
    co_return ok;
  }
  /// Frames received and not yet handed out: the next read needs no I/O.
  bool buffered() const { return next_ < buffered_.size(); }

 private:
  // Frames [next_, size) are still to hand out. A vector, not a deque:
  // nothing is allocated for a stream whose messages carry one frame each
  // (a WebSocket session holds a reader in the edge and the connector).
  std::vector<tunnel::v1::Frame> buffered_;
  std::size_t next_ = 0;
};

/// Frames gathered to go as one message.
class FrameBatch {
 public:
  /// Appends `f` (a single frame) after what is gathered.
  void add(tunnel::v1::Frame&& f);
  bool empty() const { return count_ == 0; }
  /// Body and message bytes gathered.
  std::size_t payload_bytes() const { return bytes_; }
  /// The message to write; valid until the next add() or clear().
  const tunnel::v1::Frame& message() const { return first_; }
  void clear();

  /// Writes what is gathered, if anything, and clears it. False when the
  /// write failed (the stream has ended).
  template <class Stream>
  asio::awaitable<bool> send(Stream& stream) {
    if (empty()) co_return true;
    const bool ok = co_await grpc_bridge::write(stream, first_);
    clear();
    co_return ok;
  }
  /// Half-closes the client side of `stream`, with what is gathered.
  template <class Stream>
  asio::awaitable<bool> send_last(Stream& stream) {
    bool ok;
    if (empty()) {
      ok = co_await grpc_bridge::op([&](void* tag) { stream.WritesDone(tag); });
    } else {
      ok = co_await grpc_bridge::write_last(stream, first_);
    }
    clear();
    co_return ok;
  }

 private:
  tunnel::v1::Frame first_;
  std::size_t count_ = 0;
  std::size_t bytes_ = 0;
};

}  // namespace postern::grpc_bridge
