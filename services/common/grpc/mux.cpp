#include "common/grpc/mux.hpp"

#include <grpcpp/grpcpp.h>

#include "common/exchange.hpp"
#include "postern/tunnel/v1/tunnel.grpc.pb.h"

namespace postern::grpc_bridge {

namespace tv1 = tunnel::v1;

namespace {
// One gRPC message carries at most this much of what is queued (every
// service takes messages up to 4 MiB; heads count, at up to 64 KiB of
// headers each), and at most this many frames. A single frame is never
// larger than a head or a 64 KiB piece.
constexpr std::size_t kBatchBytes = 512u << 10;
constexpr std::size_t kBatchFrames = 256;
}  // namespace

// ------------------------------------------------------------ Outbox

void Outbox::push(tv1::Frame&& f) {
  if (failed_ || closed_) return;
  queue_.push_back(std::move(f));
  wake_.set();
}

void Outbox::take_batch() {
  std::size_t n = 0, bytes = 0;
  while (!queue_.empty() && n < kBatchFrames) {
    const std::size_t size = queue_.front().ByteSizeLong();
    if (n > 0 && bytes + size > kBatchBytes) break;
    bytes += size;
    batch_.add(std::move(queue_.front()));
    queue_.pop_front();
    ++n;
  }
}

// ------------------------------------------------------------ Mux

Mux::Mux(asio::any_io_executor ex, std::unique_ptr<grpc::ClientContext> ctx, std::unique_ptr<Stream> stream,
         OnOpen on_open)
    : ex_(ex), ctx_(std::move(ctx)), stream_(std::move(stream)), on_open_(std::move(on_open)), out_(ex),
      started_(std::make_unique<Event>(ex)), ended_(std::make_unique<Event>(ex)) {}

Mux::~Mux() = default;

void Mux::start(std::optional<tv1::Frame> first) {
  asio::co_spawn(ex_, run(shared_from_this(), std::move(first)), asio::detached);
}

void Mux::close() {
  if (!ended_->is_set()) ctx_->TryCancel();
}

std::shared_ptr<MuxSession> Mux::open(const tv1::RequestHead& head, std::size_t max_message_bytes) {
  auto s = std::make_shared<MuxSession>(shared_from_this(), next_id_++, max_message_bytes);
  tv1::Frame f;
  *f.mutable_request_head() = head;
  f.mutable_request_head()->set_response_credit(kSessionWindow);
  s->send(std::move(f));
  if (dead_) s->cut();
  return s;
}

asio::awaitable<void> Mux::run(std::shared_ptr<Mux> self, std::optional<tv1::Frame> first) {
  started_ok_ = co_await op([&](void* tag) { stream_->StartCall(tag); });
  started_->set();
  Event writer_done(ex_);
  if (started_ok_) {
    if (first) out_.push(std::move(*first));
    asio::co_spawn(
        ex_, [this]() -> asio::awaitable<void> {
          const bool ok = co_await out_.run(*stream_);
          if (!ok) ctx_->TryCancel();
        },
        [&writer_done](std::exception_ptr) { writer_done.set(); });
    FrameReader reader;
    tv1::Frame f;
    for (;;) {
      const bool got = co_await reader.read(*stream_, f);
      if (!got) break;
      dispatch(std::move(f));
    }
    // The stream is over: nothing more goes out, and every session is cut.
    winding_down_ = true;
    out_.close();
    ctx_->TryCancel();
    co_await writer_done.wait();
  }
  dead_ = true;
  for (auto& [_, s] : sessions_) s->cut();
  co_await op([&](void* tag) { stream_->Finish(&status_, tag); });
  ended_->set();
}

void Mux::dispatch(tv1::Frame&& f) {
  const auto it = sessions_.find(f.session());
  if (it != sessions_.end()) {
    if (f.kind_case() == tv1::Frame::kWsCredit) {
      it->second->grant(f.ws_credit());
    } else {
      it->second->deliver(std::move(f));
    }
    return;
  }
  // A frame for a session that is over here is dropped; a head opens one.
  if (!f.has_request_head() || !on_open_ || f.session() == 0) return;
  auto s = std::make_shared<MuxSession>(shared_from_this(), f.session(), max_message_bytes_);
  s->set_send_credit(f.request_head().response_credit());
  on_open_(std::move(s), std::move(*f.mutable_request_head()));
}

// ------------------------------------------------------------ MuxSession

MuxSession::MuxSession(std::shared_ptr<Mux> mux, std::uint64_t id, std::size_t max_message_bytes)
    : mux_(std::move(mux)), id_(id), wake_(mux_->executor()),
      send_credit_(mux_->executor(), kUnpaced, mux_->credit_wait_), joiner_(max_message_bytes) {
  mux_->sessions_[id_] = this;
}

MuxSession::~MuxSession() {
  if (!over_ && !dead_) {
    tv1::Frame f;
    f.mutable_error()->set_code(tv1::ERROR_CODE_CLIENT_GONE);
    f.mutable_error()->set_message("the session was let go");
    send(std::move(f));
  }
  mux_->sessions_.erase(id_);
}

void MuxSession::send(tv1::Frame&& f) {
  if (f.has_error() || f.has_end()) over_ = true;  // an end only closes a refusal
  f.set_session(id_);
  mux_->push(std::move(f));
}

void MuxSession::deliver(tv1::Frame&& f) {
  // An end comes only as the last frame of a refusal.
  if (f.has_error() || f.has_end()) {
    over_ = true;
    send_credit_.release();  // a writer waiting for credit gives up now
  }
  in_.push_back(std::move(f));
  wake_.set();
}

asio::awaitable<bool> MuxSession::next(tv1::Frame& f) {
  while (in_next_ >= in_.size() && !dead_) {
    wake_.reset();
    co_await wake_.wait();
  }
  if (in_next_ >= in_.size()) co_return false;
  f = std::move(in_[in_next_++]);
  if (in_next_ == in_.size()) {
    in_.clear();
    in_next_ = 0;
  }
  co_return true;
}

void MuxSession::consumed(std::size_t n) {
  unacked_ += n;
  if (unacked_ < kCreditStep || over_ || dead_) return;
  tv1::Frame f;
  f.set_ws_credit(unacked_);
  unacked_ = 0;
  send(std::move(f));
}

asio::awaitable<void> MuxSession::read(net::WsMessage& m) {
  for (;;) {
    tv1::Frame f;
    const bool got = co_await next(f);
    if (!got) {
      m = net::WsMessage::close(1006, "the tunnel stream ended");
      co_return;
    }
    switch (f.kind_case()) {
      case tv1::Frame::kWsMessage:
        consumed(f.ws_message().data().size());
        if (joiner_.add(*f.mutable_ws_message(), m)) co_return;
        continue;
      case tv1::Frame::kWsClose:
        close_received_ = true;
        if (close_sent_) over_ = true;
        m = net::WsMessage::close(static_cast<std::uint16_t>(f.ws_close().code()), f.ws_close().reason());
        co_return;
      case tv1::Frame::kError:
        m = net::WsMessage::close(1006, f.error().message());
        co_return;
      case tv1::Frame::kEnd:
        m = net::WsMessage::close(1006, "the tunnel ended without a close");
        co_return;
      default:
        continue;  // nothing else belongs in a session; ignored
    }
  }
}

asio::awaitable<bool> MuxSession::write(const net::WsMessage& m) {
  if (m.is_close()) {
    if (close_sent_) co_return true;
    close_sent_ = true;
    if (close_received_) over_ = true;
    tv1::Frame f;
    f.mutable_ws_close()->set_code(m.code);
    f.mutable_ws_close()->set_reason(m.data);
    send(std::move(f));
    co_return !dead_;
  }
  if (close_sent_ || dead_) co_return false;
  std::size_t off = 0;
  do {
    co_await send_credit_.take(ws_piece_bytes(m, off));
    // Let go (cut, or an error from the far side): the write fails.
    if (dead_ || over_) co_return false;
    tv1::Frame f;
    off = put_ws_piece(m, off, *f.mutable_ws_message());
    send(std::move(f));
  } while (off < m.data.size());
  co_return true;
}

void MuxSession::abort() {
  if (!over_ && !dead_) {
    tv1::Frame f;
    f.mutable_error()->set_code(tv1::ERROR_CODE_CLIENT_GONE);
    f.mutable_error()->set_message("the session was cut");
    send(std::move(f));
  }
  cut();
}

asio::awaitable<void> MuxSession::drain(std::chrono::milliseconds limit) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (close_sent_ && !close_received_ && !over_ && !dead_) {
    if (in_next_ < in_.size()) {
      tv1::Frame f;
      co_await next(f);
      // The rest of a message still coming (one past our limit, say) is
      // credited as it is let go, so that its sender gets to our close.
      if (f.has_ws_message()) consumed(f.ws_message().data().size());
      if (f.has_ws_close()) close_received_ = over_ = true;
      if (f.has_error()) over_ = true;
      continue;
    }
    const auto now = std::chrono::steady_clock::now();
    if (now >= until) break;
    wake_.reset();
    co_await wake_.wait_for(until - now);
  }
}

}  // namespace postern::grpc_bridge
