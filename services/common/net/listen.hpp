#pragma once
// Listen addresses from config.

#include <boost/asio/ip/tcp.hpp>
#include <string_view>

namespace postern::net {

/// Parses "host:port" (host an IPv4/IPv6 literal, "[v6]", "localhost" or
/// empty for all interfaces). Throws std::invalid_argument naming the value.
boost::asio::ip::tcp::endpoint parse_listen(std::string_view text);

}  // namespace postern::net
