#pragma once
// A WebSocket session's tunnel side: the WsPort over a Relay.Invoke (edge)
// or Registration.Pull (connector) stream after the 101. Messages cross as
// ws_message pieces of at most 64 KiB, joined again here; a close crosses
// as ws_close followed by end.

#include <grpcpp/client_context.h>
#include <grpcpp/support/async_stream.h>

#include "common/grpc/ws_pieces.hpp"
#include "common/net/ws_relay.hpp"
#include "postern/tunnel/v1/tunnel.pb.h"

namespace postern::grpc_bridge {

class SendCredit;

class FramePort final : public net::WsPort {
 public:
  using Stream = grpc::ClientAsyncReaderWriter<tunnel::v1::Frame, tunnel::v1::Frame>;
  /// `max_message_bytes`: a longer message from the far side ends the
  /// session with 1009. `credit` (the connector's, when the broker paces
  /// the session): each message piece written takes its bytes from it.
  FramePort(asio::any_io_executor ex, Stream& stream, grpc::ClientContext& ctx, std::size_t max_message_bytes,
            SendCredit* credit = nullptr);

  asio::awaitable<void> read(net::WsMessage& m) override;
  asio::awaitable<bool> write(const net::WsMessage& m) override;
  void abort() override;

  /// After the relay: reads what the far side still sends (at most `limit`
  /// long, then cancels), so that Finish can complete.
  asio::awaitable<void> drain(std::chrono::milliseconds limit);
  /// True once the stream has ended (read failed or end seen).
  bool ended() const { return ended_; }

 private:
  asio::any_io_executor ex_;
  Stream& stream_;
  grpc::ClientContext& ctx_;
  WsPieceJoiner joiner_;
  SendCredit* credit_;
  tunnel::v1::Frame in_, out_;
  bool close_sent_ = false;
  bool ended_ = false;
};

}  // namespace postern::grpc_bridge
