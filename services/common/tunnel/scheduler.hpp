#pragma once
// What a lane sends next (tunnel.proto, "Fairness"): frames wait per
// exchange, and each LaneMessage takes them in turn, one frame of each
// exchange per round, until the message is full. A bulk transfer then adds
// at most one piece per message: a small exchange never waits behind more
// than one piece of it. Pure: no I/O, no clock.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <unordered_map>

#include "postern/tunnel/v1/tunnel.pb.h"

namespace postern::tunnel {

/// One LaneMessage carries at most this much of what is queued (every hop
/// takes messages up to 4 MiB; a head may hold 64 KiB of headers, a body
/// piece 256 KiB), and at most kBatchFrames frames. A single frame is never
/// held back for the limit: a message has at least one.
inline constexpr std::size_t kBatchBytes = 1u << 20;
inline constexpr std::size_t kBatchFrames = 512;

class Scheduler {
 public:
  /// Queues `f` behind the frames of its exchange (f.exchange()).
  void push(tunnel::v1::Frame&& f);
  bool empty() const { return ready_.empty(); }
  std::size_t frames() const { return frames_; }
  /// Moves frames into `out` (appended to out.frames()), one frame of each
  /// waiting exchange in turn, until `max_bytes` or kBatchFrames.
  void take(tunnel::v1::LaneMessage& out, std::size_t max_bytes = kBatchBytes);
  /// Forgets what waits for `exchange` (it was cut).
  void drop(std::uint64_t exchange);

 private:
  std::unordered_map<std::uint64_t, std::deque<tunnel::v1::Frame>> queues_;
  std::deque<std::uint64_t> ready_;  // exchanges with frames waiting, in turn
  std::size_t frames_ = 0;
};

}  // namespace postern::tunnel
