#pragma once
// Project-wide Asio spellings. Light: no Beast, no gRPC.

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace postern {

namespace asio = boost::asio;

/// Completion token for operations whose failure is expected (a peer closing
/// is not an exception): yields a tuple (error_code, result...).
inline constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);

}  // namespace postern
