#include "common/policy/ip_ranges.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <optional>

namespace postern::policy {
namespace {

struct Address {
  bool v4 = false;
  std::array<std::uint8_t, 16> bytes{};
};

constexpr std::array<std::uint8_t, 12> kMappedPrefix = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

std::optional<Address> parse_address(std::string_view text) {
  // The longest textual IPv6 address is 45 characters; anything longer is
  // garbage, and an embedded NUL would make inet_pton see only a prefix.
  if (text.empty() || text.size() > INET6_ADDRSTRLEN || text.find('\0') != std::string_view::npos) {
    return std::nullopt;
  }
  const std::string z(text);
  Address a;
  if (z.find(':') == std::string::npos) {
    in_addr v4{};
    if (inet_pton(AF_INET, z.c_str(), &v4) != 1) return std::nullopt;
    a.v4 = true;
    std::memcpy(a.bytes.data(), &v4, 4);
  } else {
    in6_addr v6{};
    if (inet_pton(AF_INET6, z.c_str(), &v6) != 1) return std::nullopt;
    std::memcpy(a.bytes.data(), &v6, 16);
  }
  return a;
}

bool is_mapped(const Address& a) {
  return !a.v4 && std::equal(kMappedPrefix.begin(), kMappedPrefix.end(), a.bytes.begin());
}

Address unmap(const Address& a) {
  Address out;
  out.v4 = true;
  std::copy(a.bytes.begin() + 12, a.bytes.end(), out.bytes.begin());
  return out;
}

// Clears every bit after the first `prefix` bits.
std::array<std::uint8_t, 16> mask(std::array<std::uint8_t, 16> bytes, unsigned prefix) {
  for (unsigned i = 0; i < 16; ++i) {
    const unsigned start = i * 8;
    if (prefix >= start + 8) continue;
    const unsigned keep = prefix > start ? prefix - start : 0;
    bytes[i] &= static_cast<std::uint8_t>(0xff00u >> keep);
  }
  return bytes;
}

bool in_range(const std::array<std::uint8_t, 16>& bytes, const std::array<std::uint8_t, 16>& net,
              unsigned prefix) {
  const unsigned whole = prefix / 8;
  if (std::memcmp(bytes.data(), net.data(), whole) != 0) return false;
  const unsigned rest = prefix % 8;
  if (rest == 0) return true;
  const auto m = static_cast<std::uint8_t>(0xff00u >> rest);
  return (bytes[whole] & m) == net[whole];
}

std::string to_text(const Address& a) {
  char buf[INET6_ADDRSTRLEN] = {};
  inet_ntop(a.v4 ? AF_INET : AF_INET6, a.bytes.data(), buf, sizeof buf);
  return buf;
}

std::string quoted(std::string_view text) {
  std::string s = "'";
  s.append(text);
  s += '\'';
  return s;
}

}  // namespace

std::string IpRanges::add(std::string_view text) {
  const auto slash = text.find('/');
  const auto addr = parse_address(text.substr(0, slash));
  if (!addr) return quoted(text) + ": not an IP address or CIDR range";

  const unsigned max_prefix = addr->v4 ? 32 : 128;
  unsigned prefix = max_prefix;
  if (slash != std::string_view::npos) {
    const auto p = text.substr(slash + 1);
    // from_chars stops quietly at the first non-digit ("8x"), so insist that
    // it consumed everything.
    const auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), prefix);
    if (p.empty() || p.size() > 3 || ec != std::errc{} || end != p.data() + p.size() || prefix > max_prefix) {
      return quoted(text) + ": prefix length must be 0-" + std::to_string(max_prefix);
    }
  }

  const auto net = mask(addr->bytes, prefix);
  if (net != addr->bytes) {
    Address fixed = *addr;
    fixed.bytes = net;
    return quoted(text) + ": host bits set; did you mean " + to_text(fixed) + "/" + std::to_string(prefix) + "?";
  }

  if (is_mapped(*addr) && prefix >= 96) {
    v4_.push_back(Range{unmap(*addr).bytes, prefix - 96});
  } else if (addr->v4) {
    v4_.push_back(Range{net, prefix});
  } else {
    v6_.push_back(Range{net, prefix});
  }
  return {};
}

bool IpRanges::contains(std::string_view ip) const {
  // Sockets report link-local IPv6 peers with a zone ("fe80::1%eth0"); the
  // zone names an interface, not part of the address.
  if (const auto pct = ip.find('%'); pct != std::string_view::npos && ip.find(':') != std::string_view::npos) {
    ip = ip.substr(0, pct);
  }
  auto addr = parse_address(ip);
  if (!addr) return false;
  if (is_mapped(*addr)) addr = unmap(*addr);
  const auto& ranges = addr->v4 ? v4_ : v6_;
  return std::any_of(ranges.begin(), ranges.end(),
                     [&](const Range& r) { return in_range(addr->bytes, r.bytes, r.prefix); });
}

}  // namespace postern::policy
