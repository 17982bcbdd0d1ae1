#pragma once
// Client-address allow/deny lists for the policy service.

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace postern::policy {

/// A set of IPv4/IPv6 addresses and CIDR ranges. Immutable after parse;
/// thread-safe to share (concurrent contains() calls are fine; add() must not
/// race with anything).
///
/// An IPv4 client is the same client however its socket reports it: the
/// IPv4-mapped form "::ffff:10.1.2.3" is treated exactly like "10.1.2.3", both
/// when matching and when adding (a range "::ffff:10.0.0.0/104" is stored as
/// "10.0.0.0/8"). Consequently IPv6 ranges never match IPv4 clients: "::/0"
/// means every IPv6 address; add "0.0.0.0/0" as well to mean everyone.
class IpRanges {
 public:
  /// Adds "10.0.0.0/8", "192.168.1.7", "::1", "2001:db8::/32". Returns an error
  /// message ("'10.0.0.0/33': prefix length must be 0-32", "'abc': not an IP
  /// address or CIDR range") or "" on success. Host bits set beyond the prefix
  /// are an error ("'10.0.0.1/8': host bits set; did you mean 10.0.0.0/8?").
  /// On error the set is unchanged.
  std::string add(std::string_view text);

  /// True if `ip` (textual, as from a socket: "127.0.0.1", "::1",
  /// "::ffff:10.1.2.3") is in any range. IPv4-mapped IPv6 addresses match IPv4
  /// ranges. A trailing zone ("fe80::1%eth0") is ignored. Unparseable input → false.
  bool contains(std::string_view ip) const;

  bool empty() const { return v4_.empty() && v6_.empty(); }

 private:
  struct Range {
    std::array<std::uint8_t, 16> bytes{};  // network order; IPv4 uses the first 4
    unsigned prefix = 0;
  };

  // Linear scans: lists are expected to be tens of entries, not thousands.
  std::vector<Range> v4_;
  std::vector<Range> v6_;
};

}  // namespace postern::policy
