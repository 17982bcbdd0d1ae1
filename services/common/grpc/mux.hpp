#pragma once
// WebSocket sessions sharing one tunnel stream (Relay.Sessions and
// Registration.Sessions in tunnel.proto): every frame names its session, a
// receiver reads the stream at once and keeps each session's frames until
// that session takes them, and message bytes cross on per-session credit so
// that one slow client or native service stalls only its own session.
//
// Outbox: frames for one stream, written by one coroutine, as few gRPC
// messages as possible (Frame.then). Mux: the client end of a Sessions
// stream (edge, connector). MuxSession: one session on a Mux, and the
// session's WsPort once it runs. The broker's end is its own (it routes
// frames and holds no session state beyond the route).
//
// Single-threaded: everything runs on the executor given to the Mux.

#include <grpcpp/client_context.h>
#include <grpcpp/support/async_stream.h>
#include <prometheus/counter.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/event.hpp"
#include "common/grpc/bridge.hpp"
#include "common/grpc/frames.hpp"
#include "common/grpc/send_credit.hpp"
#include "common/grpc/ws_pieces.hpp"
#include "common/net/ws_relay.hpp"
#include "postern/tunnel/v1/tunnel.pb.h"

namespace postern::grpc_bridge {

/// Message bytes a session's receiver lets its sender have in flight
/// (RequestHead.response_credit, ResponseHead.request_credit; the broker
/// may lower the first to its response_window, at least 64 KiB).
constexpr std::uint64_t kSessionWindow = 512u << 10;
/// A receiver credits bytes back as its client or native service takes
/// them, this many at a time: a quarter of the smallest window, so that
/// the sender never waits for bytes the receiver has taken.
constexpr std::uint64_t kCreditStep = 16u << 10;

/// Frames waiting to be written on one stream.
class Outbox {
 public:
  explicit Outbox(asio::any_io_executor ex) : wake_(std::move(ex)) {}
  Outbox(const Outbox&) = delete;
  Outbox& operator=(const Outbox&) = delete;

  /// Queues a single frame (its session set). Dropped once the stream
  /// failed or the outbox is closed.
  void push(tunnel::v1::Frame&& f);
  /// run() returns once what is queued has been written.
  void close() {
    closed_ = true;
    wake_.set();
  }
  bool failed() const { return failed_; }
  /// Frames queued and not written yet.
  std::size_t queued() const { return queue_.size(); }

  /// Writes what is queued, as it comes, until close() (true) or a write
  /// fails (false; nothing more is queued then).
  template <class Stream>
  asio::awaitable<bool> run(Stream& stream) {
    for (;;) {
      while (queue_.empty() && !closed_) {
        wake_.reset();
        co_await wake_.wait();
      }
      if (queue_.empty()) co_return true;
      take_batch();
      const bool ok = co_await grpc_bridge::write(stream, batch_.message());
      batch_.clear();
      if (!ok) {
        failed_ = true;
        queue_.clear();
        co_return false;
      }
    }
  }

 private:
  void take_batch();
  std::deque<tunnel::v1::Frame> queue_;
  FrameBatch batch_;
  Event wake_;
  bool closed_ = false;
  bool failed_ = false;
};

class MuxSession;

/// The client end of a Sessions stream.
class Mux : public std::enable_shared_from_this<Mux> {
 public:
  using Stream = grpc::ClientAsyncReaderWriter<tunnel::v1::Frame, tunnel::v1::Frame>;
  /// The far side opened a session (connector): its head, and the session
  /// to answer on.
  using OnOpen = std::function<void(std::shared_ptr<MuxSession>, tunnel::v1::RequestHead&&)>;

  /// `stream` was prepared on `ctx` (not started). `first`: a frame sent
  /// before any session's (the connector's Park).
  Mux(asio::any_io_executor ex, std::unique_ptr<grpc::ClientContext> ctx, std::unique_ptr<Stream> stream,
      OnOpen on_open = nullptr);
  ~Mux();
  Mux(const Mux&) = delete;
  Mux& operator=(const Mux&) = delete;

  /// Starts the call, then reads and writes until the stream ends.
  void start(std::optional<tunnel::v1::Frame> first = std::nullopt);
  /// Ends the stream: every session on it is cut.
  void close();

  /// Set once the call started (the broker was reached), or failed to.
  Event& started() { return *started_; }
  bool started_ok() const { return started_ok_; }
  /// New sessions may go on this stream: it has not begun to end.
  bool usable() const { return !dead_ && !out_.failed() && !winding_down_; }
  /// Set once the stream has ended and been finished.
  Event& ended() { return *ended_; }
  const grpc::Status& status() const { return status_; }
  std::size_t sessions() const { return sessions_.size(); }
  /// Longest message a session the far side opens accepts (1009 beyond).
  void set_max_message_bytes(std::size_t n) { max_message_bytes_ = n; }
  /// Counts the seconds sessions waited for the far side's credit.
  void set_credit_wait(prometheus::Counter* c) { credit_wait_ = c; }

  /// Opens a session: sends `head` (response_credit set here). Read the
  /// answer with MuxSession::next().
  std::shared_ptr<MuxSession> open(const tunnel::v1::RequestHead& head, std::size_t max_message_bytes);

  asio::any_io_executor executor() const { return ex_; }

 private:
  friend class MuxSession;
  asio::awaitable<void> run(std::shared_ptr<Mux> self, std::optional<tunnel::v1::Frame> first);
  void dispatch(tunnel::v1::Frame&& f);
  void push(tunnel::v1::Frame&& f) { out_.push(std::move(f)); }

  asio::any_io_executor ex_;
  std::unique_ptr<grpc::ClientContext> ctx_;
  std::unique_ptr<Stream> stream_;
  OnOpen on_open_;
  Outbox out_;
  std::unique_ptr<Event> started_, ended_;
  bool started_ok_ = false;
  bool winding_down_ = false;  // the read ended: the stream is being finished
  bool dead_ = false;
  grpc::Status status_;
  std::map<std::uint64_t, MuxSession*> sessions_;
  std::uint64_t next_id_ = 1;
  std::size_t max_message_bytes_ = 16u << 20;  // for sessions the far side opens
  prometheus::Counter* credit_wait_ = nullptr;
};

/// One session on a Mux. Before the session runs, next() gives the far
/// side's frames (its answer to the head); once it runs, it is the
/// session's WsPort. Destroying it ends the session: with an error frame to
/// the far side (CLIENT_GONE) unless it was over already.
class MuxSession final : public net::WsPort {
 public:
  MuxSession(std::shared_ptr<Mux> mux, std::uint64_t id, std::size_t max_message_bytes);
  ~MuxSession() override;
  MuxSession(const MuxSession&) = delete;
  MuxSession& operator=(const MuxSession&) = delete;

  std::uint64_t id() const { return id_; }
  /// Sends a frame of this session (response_head, body, end, error...).
  void send(tunnel::v1::Frame&& f);
  /// The next frame the far side sent (credit is taken in by the session).
  /// False when the stream ended or the session was aborted.
  asio::awaitable<bool> next(tunnel::v1::Frame& f);
  /// Message bytes this side may send before the far side credits more
  /// (0: not paced), and what this side granted the far side.
  void set_send_credit(std::uint64_t bytes) { send_credit_.reset(bytes ? bytes : kUnpaced); }
  /// Waits (at most `limit`) for the far side's close once ours went.
  asio::awaitable<void> drain(std::chrono::milliseconds limit);
  /// The session is over for both sides (closes both ways, or an error).
  bool over() const { return over_; }

  asio::awaitable<void> read(net::WsMessage& m) override;
  asio::awaitable<bool> write(const net::WsMessage& m) override;
  void abort() override;

 private:
  friend class Mux;
  static constexpr std::uint64_t kUnpaced = UINT64_MAX / 4;
  void deliver(tunnel::v1::Frame&& f);
  void grant(std::uint64_t n) { send_credit_.grant(n); }
  void cut() {
    dead_ = true;
    wake_.set();
    send_credit_.release();
  }
  void consumed(std::size_t n);

  std::shared_ptr<Mux> mux_;
  std::uint64_t id_;
  std::vector<tunnel::v1::Frame> in_;
  std::size_t in_next_ = 0;
  // The reader waits on wake_ (a frame or the end), the writer in
  // send_credit_ (credit or the end): one waiter each, so that neither's
  // reset swallows the other's wake-up.
  Event wake_;
  SendCredit send_credit_;
  std::uint64_t unacked_ = 0;  // taken since the last ws_credit we sent
  WsPieceJoiner joiner_;
  bool dead_ = false;
  bool close_sent_ = false, close_received_ = false;
  bool over_ = false;
};

}  // namespace postern::grpc_bridge
