#include "edge/forwarding.hpp"

#include <boost/asio/ip/address.hpp>
#include <cctype>
#include <string>
#include <vector>

#include "common/net/http_headers.hpp"

namespace postern::edge {

namespace {

bool is_ip(std::string_view s) {
  boost::system::error_code ec;
  boost::asio::ip::make_address(std::string(s), ec);
  return !ec;
}

// A node for Forwarded's for= (RFC 7239 section 6): IPv6 bracketed and
// quoted.
std::string node(std::string_view ip) {
  if (ip.find(':') != std::string_view::npos) return "\"[" + std::string(ip) + "]\"";
  return std::string(ip);
}

}  // namespace

ClientAddress client_address(std::string_view peer_ip, const policy::IpRanges& trusted_proxies, std::string_view xff,
                             std::string_view forwarded, std::string_view proto, std::string_view host) {
  ClientAddress out;
  out.client_ip = std::string(peer_ip);
  const bool via_proxy = !trusted_proxies.empty() && trusted_proxies.contains(peer_ip);
  std::string element = "for=" + node(peer_ip) + ";proto=" + std::string(proto);
  // host_problem() has ruled out '"' and '\', so quoting is plain.
  if (!host.empty()) element += ";host=\"" + std::string(host) + "\"";
  if (!via_proxy || net::trim_ows(xff).empty()) {
    out.x_forwarded_for = std::string(peer_ip);
  } else {
    out.x_forwarded_for = std::string(net::trim_ows(xff)) + ", " + std::string(peer_ip);
    // Right to left: the first address no trusted proxy owns is the client;
    // a token that is no address stops the walk at the proxy that wrote it.
    std::vector<std::string_view> hops;
    for (std::string_view rest = xff; !rest.empty();) {
      const auto comma = rest.find(',');
      hops.push_back(net::trim_ows(rest.substr(0, comma)));
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
    for (auto it = hops.rbegin(); it != hops.rend(); ++it) {
      if (!is_ip(*it)) break;
      out.client_ip = std::string(*it);
      if (!trusted_proxies.contains(*it)) break;
    }
  }
  const auto earlier = net::trim_ows(forwarded);
  out.forwarded = via_proxy && !earlier.empty() ? std::string(earlier) + ", " + element : element;
  return out;
}

std::optional<std::string> host_problem(std::string_view host) {
  if (host.empty()) return "an empty Host";
  if (host.size() > 255) return "a Host longer than 255 characters";
  std::string_view name = host;
  std::string_view port;
  if (name.front() == '[') {
    const auto close = name.find(']');
    if (close == std::string_view::npos) return "an IPv6 Host without ']'";
    const std::string_view inner = name.substr(1, close - 1);
    for (char c : inner) {
      if (!std::isxdigit(static_cast<unsigned char>(c)) && c != ':' && c != '.') {
        return "a malformed IPv6 address in Host";
      }
    }
    const std::string_view after = name.substr(close + 1);
    if (!after.empty() && after.front() != ':') return "characters after the IPv6 address in Host";
    if (!after.empty()) {
      port = after.substr(1);
      if (port.empty()) return "an empty port in Host";
    }
  } else {
    const auto colon = name.find(':');
    if (colon != std::string_view::npos) {
      port = name.substr(colon + 1);
      name = name.substr(0, colon);
      if (port.empty()) return "an empty port in Host";
    }
    if (name.empty()) return "no host name in Host";
    for (char c : name) {
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.' && c != '_') {
        return "a character that no host name has in Host";
      }
    }
  }
  if (port.size() > 5) return "a port over 65535 in Host";
  for (char c : port) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return "a port that is not a number in Host";
  }
  if (!port.empty() && std::stoul(std::string(port)) > 65535) return "a port over 65535 in Host";
  return std::nullopt;
}

}  // namespace postern::edge
