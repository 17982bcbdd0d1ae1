#pragma once
// Who the client is, and what the edge tells the native service about it
// (X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host, Forwarded: RFC
// 7239). A client's own forwarding headers are believed only when they come
// through a trusted proxy (EdgeConfig.trusted_proxies); from anyone else they
// are dropped, since they are whatever the client chose to write. Pure.

#include <optional>
#include <string>
#include <string_view>

#include "common/policy/ip_ranges.hpp"

namespace postern::edge {

struct ClientAddress {
  /// The address IP policies and logs use: the peer, or (through trusted
  /// proxies) the rightmost X-Forwarded-For address that is not a trusted
  /// proxy itself.
  std::string client_ip;
  /// The values to send on.
  std::string x_forwarded_for;
  std::string forwarded;
};

/// `peer_ip`: the TCP peer. `xff` and `forwarded`: the request's headers of
/// those names (repeated fields joined with ", "; empty when absent).
/// `proto`: "http" or "https"; `host`: the validated Host ("" if none).
ClientAddress client_address(std::string_view peer_ip, const policy::IpRanges& trusted_proxies, std::string_view xff,
                             std::string_view forwarded, std::string_view proto, std::string_view host);

/// What is wrong with a Host header value, or nullopt when it is a host name
/// or address with an optional port (RFC 9110 7.2, kept to the characters
/// real host names use, so it can be quoted anywhere it is passed on).
std::optional<std::string> host_problem(std::string_view host);

}  // namespace postern::edge
