#pragma once
// Reading a message body in pieces for the tunnel: what has arrived is sent
// on at once (a streaming body is not held back until a piece is full), and
// what is already waiting is gathered into one piece (a bulk body crosses in
// large pieces). Beast-heavy: include from .cpp files only.

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <utility>

#include "common/asio.hpp"
#include "common/exchange.hpp"

namespace postern::net {

/// The buffer a body is read into, piece by piece. It starts at
/// kWsPieceBytes and doubles, up to kChunkBytes, each time a piece fills it:
/// small and streaming bodies keep a small buffer, bulk ones reach large
/// pieces (fewer tunnel messages).
class PieceBuffer {
 public:
  PieceBuffer() = default;
  /// For a body of `remaining` bytes (none: unknown, chunked; a parser's
  /// content_length_remaining()): a body
  /// shorter than kWsPieceBytes starts with a buffer of its own size, not
  /// a 64 KiB one made and freed (with a consolidation of the heap's free
  /// lists) for every small response.
  explicit PieceBuffer(boost::optional<std::uint64_t> remaining) {
    if (remaining) capacity_ = static_cast<std::size_t>(std::clamp<std::uint64_t>(*remaining, 1, kWsPieceBytes));
  }
  /// Room for the next piece. Invalidates the previous piece.
  char* prepare() {
    if (last_filled_ && capacity_ < kChunkBytes) {
      capacity_ = std::min(capacity_ * 2, kChunkBytes);
      data_.reset();
    }
    last_filled_ = false;
    if (!data_) data_.reset(new char[capacity_]);
    return data_.get();
  }
  std::size_t capacity() const { return capacity_; }
  /// Reports the size of the piece just read.
  void got(std::size_t n) { last_filled_ = n == capacity_; }

 private:
  std::unique_ptr<char[]> data_;
  std::size_t capacity_ = kWsPieceBytes;
  bool last_filled_ = false;
};

/// Reads into the body buffer (`buffer_body`) of `parser`: at least one
/// read, then more while bytes are already waiting on the socket and the
/// piece has room. Returns the bytes placed at `data` (at
/// most `capacity`), and the error of a read that failed (need_buffer, a
/// full piece, is not an error).
template <class Stream, class Parser>
asio::awaitable<std::pair<boost::beast::error_code, std::size_t>> read_body_piece(Stream& stream,
                                                                                  boost::beast::flat_buffer& buffer,
                                                                                  Parser& parser, char* data,
                                                                                  std::size_t capacity) {
  namespace http = boost::beast::http;
  parser.get().body().data = data;
  parser.get().body().size = capacity;
  boost::beast::error_code ec;
  for (;;) {
    auto [e, n] = co_await http::async_read_some(stream, buffer, parser, use_nothrow);
    (void)n;
    if (e == http::error::need_buffer) break;  // the piece is full
    if (e) {
      ec = e;
      break;
    }
    if (parser.is_done() || parser.get().body().size == 0) break;
    // Only bytes on the socket count: what is left in `buffer` may be the
    // start of the next chunk's framing, which would wait for its rest.
    boost::system::error_code aec;
    const auto waiting = boost::beast::get_lowest_layer(stream).socket().available(aec);
    if (aec || waiting == 0) break;
  }
  co_return std::pair{ec, capacity - parser.get().body().size};
}

}  // namespace postern::net
