#include "common/tunnel/lane.hpp"

#include <prometheus/histogram.h>

namespace postern::tunnel {

namespace tv1 = tunnel::v1;

namespace {
// Turns of the event loop the writer yields, at most, for more frames
// before it writes what it has.
constexpr int kGatherTurns = 4;
// A graceful close waits this long for the far side to end its side.
constexpr auto kCloseLimit = std::chrono::seconds(2);
}  // namespace

Lane::Lane(asio::any_io_executor ex, std::unique_ptr<LaneIo> io, prometheus::Histogram* frames_per_message)
    : ex_(ex), io_(std::move(io)), frames_per_message_(frames_per_message), wake_(ex), writer_done_(ex),
      reader_done_(ex), changed_(ex) {}

Lane::~Lane() = default;

void Lane::send(tv1::Frame&& f) {
  if (over_) return;
  out_.push(std::move(f));
  wake_.set();
}

void Lane::send_drain() {
  drain_pending_ = true;
  wake_.set();
}

void Lane::close() {
  closing_ = true;
  wake_.set();
}

void Lane::abort() {
  over_ = true;
  io_->cancel();
  wake_.set();
}

asio::awaitable<void> Lane::write_loop() {
  tv1::LaneMessage m;
  if (first_) {
    m = std::move(*first_);
    first_.reset();
  }
  for (;;) {
    // Everything queued while the last write was in flight goes now.
    if (m.frames_size() == 0 && !m.has_hello()) {
      while (out_.empty() && !drain_pending_ && !closing_ && !over_) {
        wake_.reset();
        co_await wake_.wait();
      }
      if (over_) break;
      if (out_.empty() && !drain_pending_) break;  // closing, nothing left
      // Frames that other handlers ready now will queue (a response's
      // body and end right after its head) join this message: yield to
      // them while the queue still grows, a few turns at most. No timer.
      for (int turn = 0; turn < kGatherTurns && !over_; ++turn) {
        const std::size_t before = out_.frames();
        co_await asio::post(ex_, asio::use_awaitable);
        if (out_.frames() == before) break;
      }
      if (over_) break;
    }
    out_.take(m);
    if (drain_pending_ && out_.empty()) {
      m.set_drain(true);
      drain_pending_ = false;
    }
    if (frames_per_message_ && m.frames_size() > 0) frames_per_message_->Observe(static_cast<double>(m.frames_size()));
    ++begun_;
    const bool ok = co_await io_->write(m);
    m.Clear();
    if (!ok) break;
    if (writes_++ == 0) changed_.set();
  }
  if (closing_ && !over_) {
    // Gracefully: the far side gets what was written, then the end; it
    // ends its side in turn, which ends our reader (or the limit does).
    over_ = true;
    co_await io_->close_writes();
    Deadline limit(ex_, kCloseLimit, [this] { io_->cancel(); });
    co_await reader_done_.wait();
  } else {
    over_ = true;
    io_->cancel();  // the reader stops too
  }
  writer_done_.set();
}

asio::awaitable<void> Lane::run(LaneHandler& handler, std::optional<tv1::LaneMessage> first) {
  first_ = std::move(first);
  asio::co_spawn(ex_, write_loop(), asio::detached);
  tv1::LaneMessage m;
  for (;;) {
    const bool got = co_await io_->read(m);
    if (!got) break;
    handler.on_message();
    if (m.drain()) handler.on_drain();
    for (auto& f : *m.mutable_frames()) handler.on_frame(std::move(f));
    m.Clear();
  }
  reader_done_.set();
  // A graceful close is the writer's to finish; otherwise the stream ended
  // under us, and the writer stops now.
  if (!closing_) {
    over_ = true;
    io_->cancel();
  }
  wake_.set();
  co_await writer_done_.wait();
  co_await io_->finish();
  changed_.set();
}

}  // namespace postern::tunnel
