#include "common/grpc/frame_port.hpp"

#include <grpcpp/grpcpp.h>

#include "postern/tunnel/v1/tunnel.grpc.pb.h"

#include "common/event.hpp"
#include "common/exchange.hpp"
#include "common/grpc/bridge.hpp"
#include "common/grpc/send_credit.hpp"

namespace postern::grpc_bridge {

namespace tv1 = tunnel::v1;

FramePort::FramePort(asio::any_io_executor ex, Stream& stream, grpc::ClientContext& ctx, std::size_t max_message_bytes,
                     SendCredit* credit)
    : ex_(std::move(ex)), stream_(stream), ctx_(ctx), joiner_(max_message_bytes), credit_(credit) {}

asio::awaitable<void> FramePort::read(net::WsMessage& m) {
  for (;;) {
    in_.Clear();
    bool ok = false;
    if (!ended_) ok = co_await grpc_bridge::read(stream_, in_);
    if (!ok) {
      ended_ = true;
      m = net::WsMessage::close(1006, "the tunnel stream ended");
      co_return;
    }
    switch (in_.kind_case()) {
      case tv1::Frame::kWsMessage:
        if (joiner_.add(*in_.mutable_ws_message(), m)) co_return;
        continue;
      case tv1::Frame::kWsClose:
        m = net::WsMessage::close(static_cast<std::uint16_t>(in_.ws_close().code()), in_.ws_close().reason());
        co_return;
      case tv1::Frame::kError:
        m = net::WsMessage::close(1006, in_.error().message());
        co_return;
      case tv1::Frame::kEnd:
        ended_ = true;
        m = net::WsMessage::close(1006, "the tunnel ended without a close");
        co_return;
      default:
        continue;  // nothing else belongs in a session; ignored
    }
  }
}

asio::awaitable<bool> FramePort::write(const net::WsMessage& m) {
  if (m.is_close()) {
    if (close_sent_) co_return true;
    close_sent_ = true;
    out_.Clear();
    out_.mutable_ws_close()->set_code(m.code);
    out_.mutable_ws_close()->set_reason(m.data);
    bool ok = co_await grpc_bridge::write(stream_, out_);
    if (ok) {
      out_.Clear();
      out_.mutable_end();
      ok = co_await grpc_bridge::write(stream_, out_);
    }
    if (ok) ok = co_await grpc_bridge::op([&](void* tag) { stream_.WritesDone(tag); });
    co_return ok;
  }
  if (close_sent_) co_return false;
  std::size_t off = 0;
  do {
    if (credit_) co_await credit_->take(ws_piece_bytes(m, off));
    out_.Clear();
    off = put_ws_piece(m, off, *out_.mutable_ws_message());
    const bool ok = co_await grpc_bridge::write(stream_, out_);
    if (!ok) co_return false;
  } while (off < m.data.size());
  co_return true;
}

void FramePort::abort() {
  ctx_.TryCancel();
  // A write waiting for credit fails now rather than when the broker lets go.
  if (credit_) credit_->release();
}

asio::awaitable<void> FramePort::drain(std::chrono::milliseconds limit) {
  Deadline d(ex_, limit, [this] { ctx_.TryCancel(); });
  while (!ended_) {
    in_.Clear();
    const bool ok = co_await grpc_bridge::read(stream_, in_);
    if (!ok) ended_ = true;
  }
}

}  // namespace postern::grpc_bridge
