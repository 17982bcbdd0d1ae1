#pragma once
// Chunked trailer fields between Beast messages and tunnel frames. Beast's
// parser appends trailers to the message's fields, after the head's fields.

#include <boost/beast/http/fields.hpp>

#include "common/exchange.hpp"

namespace postern::net {

/// Fields past the first `head_fields` of `fields`, minus framing and
/// hop-by-hop names (which may never travel as trailers).
Trailers trailers_after(const boost::beast::http::fields& fields, std::size_t head_fields);

/// Trailers as Beast fields, for http::make_chunk_last.
boost::beast::http::fields to_fields(const Trailers& trailers);

}  // namespace postern::net
