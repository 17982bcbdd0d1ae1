#pragma once
// Chunked trailer fields between Beast messages and tunnel frames. Beast's
// parser appends trailers to the message's fields, after the head's fields.

#include <boost/asio/write.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/chunk_encode.hpp>
#include <boost/beast/http/fields.hpp>
#include <boost/beast/http/serializer.hpp>
#include <boost/beast/http/write.hpp>

#include <map>
#include <string>

#include "common/exchange.hpp"

namespace postern::net {

/// How many fields of each (lower-case) name a message head has.
using HeadCounts = std::map<std::string, std::size_t>;
HeadCounts count_fields(const boost::beast::http::fields& fields);

/// The fields of `fields` (a parsed chunked message: head, then trailers)
/// beyond those its head had (`head`, from count_fields() before the body),
/// minus the names that may never travel as trailers (RFC 9110 6.5.1:
/// framing, routing, authentication, request modifiers, forwarding and
/// request-id fields).
Trailers trailers_after(const boost::beast::http::fields& fields, const HeadCounts& head);

/// Removes from `trailers` what trailers_after() would never return (for
/// trailers that come from another hop).
void drop_forbidden_trailers(Trailers& trailers);

/// Trailers as Beast fields, for http::make_chunk_last.
boost::beast::http::fields to_fields(const Trailers& trailers);

/// Ends a buffer_body message being written through `sr`. A chunked body
/// with trailers gets a hand-written last chunk carrying them (the
/// serializer cannot); anything else gets the serializer's own ending.
template <class Stream, bool isRequest>
asio::awaitable<boost::system::error_code> write_body_end(
    Stream& stream, boost::beast::http::serializer<isRequest, boost::beast::http::buffer_body>& sr,
    boost::beast::http::message<isRequest, boost::beast::http::buffer_body>& message, const Trailers& trailers) {
  namespace http = boost::beast::http;
  if (message.chunked() && !trailers.empty()) {
    const auto fields = to_fields(trailers);
    auto [ec, n] = co_await asio::async_write(stream, http::make_chunk_last(fields), use_nothrow);
    co_return ec;
  }
  message.body().data = nullptr;
  message.body().size = 0;
  message.body().more = false;
  auto [ec, n] = co_await http::async_write(stream, sr, use_nothrow);
  if (ec == http::error::need_buffer) ec = {};
  co_return ec;
}

}  // namespace postern::net
