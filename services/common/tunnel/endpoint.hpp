#pragma once
// The exchanges of one lane as an edge or a connector sees them (the broker
// routes frames instead: services/broker/exchange_router). An Endpoint runs
// a lane and keeps its exchange table: each frame received goes to its
// exchange (credit frames feed the exchange's send credit), a request head
// opens an exchange on the acceptor side, and when the lane ends every
// exchange on it is cut.
//
// Exchange: the far side's frames in order, credit both ways. Adapters for
// what moves through an exchange are in exchange_io.hpp.
//
// Single-threaded: everything on the lane's executor.

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/event.hpp"
#include "common/tunnel/credit.hpp"
#include "common/tunnel/frames.hpp"
#include "common/tunnel/lane.hpp"

namespace prometheus {
class Counter;
}

namespace postern::tunnel {

class Endpoint;

/// One exchange on an Endpoint. Destroying it while it is not over tells
/// the far side (an error frame, CLIENT_GONE).
class Exchange {
 public:
  Exchange(std::shared_ptr<Endpoint> endpoint, std::uint64_t id, std::uint64_t receive_window);
  ~Exchange();
  Exchange(const Exchange&) = delete;
  Exchange& operator=(const Exchange&) = delete;

  std::uint64_t id() const { return id_; }
  /// Sends a frame of this exchange (its id set here). Data frames must
  /// have taken their bytes with take_credit() first.
  void send(tv1::Frame&& f);
  /// The far side's next frame (credit frames are taken in here, never
  /// returned). False once the exchange was cut (its lane ended, or
  /// cut() was called) and nothing is left to read.
  asio::awaitable<bool> next(tv1::Frame& f);
  /// True when a frame is waiting: next() needs no wait.
  bool ready() const { return in_next_ < in_.size(); }
  /// Waits at most `limit` for a frame; true if one is waiting then.
  asio::awaitable<bool> wait(std::chrono::steady_clock::duration limit) {
    if (!ready() && !cut_) {
      wake_.reset();
      co_await wake_.wait_for(limit);
    }
    co_return ready();
  }
  /// Waits for credit to send `n` data bytes (or until the exchange is over
  /// or cut: check usable() after).
  asio::awaitable<void> take_credit(std::size_t n) { return send_credit_.take(n); }
  /// The local consumer took `n` data bytes: grants them back to the far
  /// side, in steps.
  void consumed(std::size_t n);
  /// Grants the far side the rest of this side's receive window at once.
  /// The opener does so with its head; the acceptor when it first waits
  /// for data (next() with nothing there and more to come), so that a
  /// request that came whole costs no credit frame.
  void open_window();
  /// Ends the exchange here and tells the far side (error frame), unless it
  /// is over already. A reader waiting in next() gets what is left, then
  /// false.
  void abandon(tv1::ErrorCode code, std::string message);
  /// The exchange is over for both sides: an error either way, or both
  /// directions ended. Nothing more is sent.
  bool over() const { return over_; }
  /// This side may still send (not over, not cut, not stopped).
  bool usable() const { return !over_ && !cut_ && !stopped_; }
  /// The far side's direction ended (its end or ws_close came).
  bool remote_ended() const { return remote_ended_; }
  /// This side sends no more data (the answer came while a body was still
  /// going up): a writer waiting for credit gives up.
  void stop_sending() {
    stopped_ = true;
    send_credit_.release();
  }
  /// The opening head may have reached the far side: a write that held it
  /// began. False means the far side never saw this exchange, so it may go
  /// elsewhere.
  bool may_have_left() const;
  /// Why the exchange was cut ("" if it was not).
  const std::string& cut_reason() const { return cut_reason_; }

  /// Marks this side's direction ended (its end or ws_close went).
  void local_ended() {
    local_ended_ = true;
    check_over();
  }

 private:
  friend class Endpoint;
  void deliver(tv1::Frame&& f);
  void cut(std::string reason);
  void check_over() {
    if (local_ended_ && remote_ended_) over_ = true;
  }

  std::shared_ptr<Endpoint> endpoint_;
  std::uint64_t id_;
  std::vector<tv1::Frame> in_;
  std::size_t in_next_ = 0;
  // The reader waits on wake_, the writer in send_credit_: one waiter each.
  Event wake_;
  SendCredit send_credit_;
  ReceiveWindow window_;
  bool local_ended_ = false, remote_ended_ = false;
  bool over_ = false;
  bool cut_ = false;
  bool stopped_ = false;
  bool window_open_ = false;
  std::string cut_reason_;
  std::uint64_t opened_at_write_ = 0;
};

/// A lane and its exchanges.
class Endpoint : public LaneHandler, public std::enable_shared_from_this<Endpoint> {
 public:
  /// The far side opened an exchange (acceptor side): its head, and the
  /// exchange to answer on. Without one, request heads are refused.
  using OnOpen = std::function<void(std::shared_ptr<Exchange>, tv1::RequestHead&&)>;

  struct Options {
    /// Bytes this side lets the far side have in flight per exchange.
    std::uint64_t receive_window = 4u << 20;
    /// Exchanges the far side may open at once (acceptor); beyond, refused
    /// with NO_CAPACITY.
    std::size_t max_exchanges = 10000;
    /// Seconds spent waiting for the far side's credit (may be null).
    prometheus::Counter* credit_wait = nullptr;
    /// Called when the far side asks to drain (draining() is then true):
    /// whoever waits for a usable lane may give up on this one at once.
    std::function<void()> on_drain;
  };

  Endpoint(asio::any_io_executor ex, std::unique_ptr<LaneIo> io, Options options, OnOpen on_open = nullptr,
           prometheus::Histogram* frames_per_message = nullptr);
  ~Endpoint() override;

  /// Runs the lane until it ends (`first`: its LaneHello), then cuts every
  /// exchange still open. Keep a shared_ptr to the endpoint meanwhile.
  asio::awaitable<void> run(std::optional<tv1::LaneMessage> first = std::nullopt);

  /// Opens an exchange (opener side): sends `head`. Read the answer with
  /// next().
  std::shared_ptr<Exchange> open(tv1::RequestHead head);

  /// New exchanges may go on this lane: it is up and the far side did not
  /// ask to drain.
  bool usable() const { return !lane_.over() && !draining_; }
  bool over() const { return lane_.over(); }
  /// The far side asked to drain (LaneMessage.drain).
  bool draining() const { return draining_; }
  std::size_t exchanges() const { return exchanges_.size(); }
  Lane& lane() { return lane_; }
  /// Set once the lane has ended and its exchanges are cut.
  Event& ended() { return ended_; }
  asio::any_io_executor executor() const { return ex_; }

 private:
  friend class Exchange;
  void on_frame(tv1::Frame&& f) override;
  void on_drain() override {
    draining_ = true;
    if (options_.on_drain) options_.on_drain();
  }
  void refuse(std::uint64_t id, tv1::ErrorCode code, std::string message);

  asio::any_io_executor ex_;
  Lane lane_;
  Options options_;
  OnOpen on_open_;
  std::map<std::uint64_t, Exchange*> exchanges_;
  std::uint64_t next_id_ = 1;
  bool draining_ = false;
  Event ended_;
};

}  // namespace postern::tunnel
