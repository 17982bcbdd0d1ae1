#pragma once
// A lane (tunnel.proto): one long-lived bidirectional gRPC stream that
// carries the frames of many exchanges both ways. The lane reads messages
// and hands each frame to its handler; it writes what is queued, everything
// that waited while the previous write was in flight going as one message
// (no timer: at low load a frame leaves at once, under load many share a
// message), taken fairly across exchanges (Scheduler).
//
// Light header: no gRPC. The stream is behind LaneIo (lane_io.hpp has the
// gRPC ones; tests use in-memory ones).
//
// Single-threaded: everything on the executor given to the lane.

#include <cstdint>
#include <memory>
#include <optional>

#include "common/event.hpp"
#include "common/tunnel/scheduler.hpp"
#include "postern/tunnel/v1/tunnel.pb.h"

namespace prometheus {
class Histogram;
}

namespace postern::tunnel {

/// The stream under a lane: at most one read and one write outstanding.
class LaneIo {
 public:
  virtual ~LaneIo() = default;
  /// The next message; false once the stream has ended.
  virtual asio::awaitable<bool> read(tunnel::v1::LaneMessage& m) = 0;
  /// False once the stream has ended.
  virtual asio::awaitable<bool> write(const tunnel::v1::LaneMessage& m) = 0;
  /// Ends the stream now: reads and writes under way and later ones fail.
  virtual void cancel() = 0;
  /// After the last read and write: completes the call (gRPC's Finish).
  virtual asio::awaitable<void> finish() { co_return; }
  /// Ends this side's writes after what was written, so that the far side
  /// reads all of it and then the end (a client's WritesDone, a server's
  /// Finish with OK), unlike cancel(), which may lose what is in transit.
  virtual asio::awaitable<void> close_writes() { co_return; }
};

/// Where a lane's frames go.
class LaneHandler {
 public:
  virtual ~LaneHandler() = default;
  /// A frame from the far side, in the order sent.
  virtual void on_frame(tunnel::v1::Frame&& f) = 0;
  /// The far side takes no new exchanges on this lane (LaneMessage.drain).
  virtual void on_drain() {}
  /// A message arrived (its frames follow through on_frame).
  virtual void on_message() {}
};

class Lane {
 public:
  /// `frames_per_message` (may be null) observes each message written.
  Lane(asio::any_io_executor ex, std::unique_ptr<LaneIo> io, prometheus::Histogram* frames_per_message = nullptr);
  ~Lane();
  Lane(const Lane&) = delete;
  Lane& operator=(const Lane&) = delete;

  /// Reads and writes until the stream ends (the far side ended it, a
  /// write failed, or close()/abort()), handing every frame received to
  /// `handler`. `first` goes out before anything queued (a LaneHello).
  /// Returns once reading and writing have both stopped and the call is
  /// finished; over() is true from the moment the stream is known to end.
  asio::awaitable<void> run(LaneHandler& handler, std::optional<tunnel::v1::LaneMessage> first = std::nullopt);

  /// Queues a frame (f.exchange() set). Dropped once the lane is over.
  void send(tunnel::v1::Frame&& f);
  /// Forgets what is queued for an exchange that was cut.
  void drop(std::uint64_t exchange) { out_.drop(exchange); }
  /// Tells the far side, after what is queued, that this side takes no new
  /// exchanges here.
  void send_drain();
  /// Writes what is queued, then ends the lane: the far side reads every
  /// frame, then the end (its reads end; it is not cancelled).
  void close();
  /// Ends the lane now; what is queued is lost.
  void abort();

  bool over() const { return over_; }
  /// A write has gone through: the stream is established.
  bool up() const { return writes_ > 0 && !over_; }
  /// Set when the first write goes through, and when the lane ends.
  Event& changed() { return changed_; }
  /// Writes begun so far: a frame queued when this was n leaves in a write
  /// begun later, so it may have reached the far side once this exceeds n.
  std::uint64_t writes_begun() const { return begun_; }
  /// Frames queued and not written yet.
  std::size_t queued() const { return out_.frames(); }
  asio::any_io_executor executor() const { return ex_; }

 private:
  asio::awaitable<void> write_loop();

  asio::any_io_executor ex_;
  std::unique_ptr<LaneIo> io_;
  prometheus::Histogram* frames_per_message_;
  Scheduler out_;
  Event wake_;          // the writer: something queued, or closing
  Event writer_done_;
  Event reader_done_;
  Event changed_;
  std::size_t writes_ = 0;
  std::uint64_t begun_ = 0;
  std::optional<tunnel::v1::LaneMessage> first_;
  bool drain_pending_ = false;
  bool closing_ = false;
  bool over_ = false;
};

}  // namespace postern::tunnel
