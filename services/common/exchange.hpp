#pragma once
// The two halves of an exchange as seen by whoever moves it one hop further:
// a request body to read and a response to write. The edge's client
// connection, an exchange on a tunnel lane and a native HTTP connection all
// implement one side or the other, so each hop is "read from one, write to
// the other" with backpressure from the awaits.

#include <string_view>

#include "common/asio.hpp"
#include "common/error.hpp"
#include "postern/tunnel/v1/tunnel.pb.h"

namespace postern {

/// Largest body piece on every hop: large enough that a bulk transfer costs
/// few tunnel messages (each is a completion-queue round trip at both ends
/// of a hop), small enough that nothing buffers much. A piece carries what
/// has arrived, so a streaming body is not held back to fill one.
inline constexpr std::size_t kChunkBytes = 256 * 1024;

/// WebSocket messages cross the tunnel in pieces of at most this size.
inline constexpr std::size_t kWsPieceBytes = 64 * 1024;

/// A refused WebSocket upgrade's body: the edge keeps at most this much of
/// it for the client, and on a shared stream no more of it crosses.
inline constexpr std::size_t kMaxRefusalBodyBytes = 1u << 20;

/// Trailer fields of a chunked body (empty for most bodies).
using Trailers = google::protobuf::RepeatedPtrField<tunnel::v1::Header>;

/// A request body as it arrives. Single consumer; not thread-safe.
class BodySource {
 public:
  virtual ~BodySource() = default;
  /// Sets `chunk` to the next piece of the body (valid until the next call)
  /// and returns true, or returns false at the end of the body. Throws
  /// ExchangeError when the body cannot be read.
  virtual asio::awaitable<bool> next(std::string_view& chunk) = 0;
  /// Trailer fields, valid once next() has returned false.
  virtual const Trailers& trailers() const { return no_trailers_; }

 protected:
  Trailers no_trailers_;
};

/// Where a response goes. Calls come in order: head, body*, end.
class ResponseSink {
 public:
  virtual ~ResponseSink() = default;
  virtual asio::awaitable<void> head(tunnel::v1::ResponseHead& head) = 0;
  virtual asio::awaitable<void> body(std::string_view chunk) = 0;
  /// Ends the body; `trailers` go out as chunked trailer fields where the
  /// framing allows (dropped otherwise, as HTTP permits).
  virtual asio::awaitable<void> end(const Trailers& trailers) = 0;
  /// Nothing more of the response is at hand for now: whatever the sink
  /// held back to send with what follows (a head, say) goes out. A sink may
  /// hold the head until its first body piece so that both leave in one
  /// write; callers that may wait before the next call must call this.
  virtual asio::awaitable<void> idle() { co_return; }
  /// True once head() was called: an error can no longer become a response.
  bool started() const { return started_; }

 protected:
  bool started_ = false;
};

/// A sink in front of another that changes only the response head (edit()),
/// and passes everything on.
class HeadEditingSink : public ResponseSink {
 public:
  explicit HeadEditingSink(ResponseSink& next) : next_(next) {}
  asio::awaitable<void> head(tunnel::v1::ResponseHead& head) final {
    started_ = true;
    edit(head);
    co_await next_.head(head);
  }
  asio::awaitable<void> body(std::string_view chunk) final { co_await next_.body(chunk); }
  asio::awaitable<void> end(const Trailers& trailers) final { co_await next_.end(trailers); }
  asio::awaitable<void> idle() final { co_await next_.idle(); }

 protected:
  virtual void edit(tunnel::v1::ResponseHead& head) = 0;

 private:
  ResponseSink& next_;
};

}  // namespace postern
