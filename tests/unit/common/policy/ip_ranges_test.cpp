#include "common/policy/ip_ranges.hpp"

#include <gtest/gtest.h>

#include <string>

namespace postern::policy {
namespace {

IpRanges ranges(std::initializer_list<const char*> items) {
  IpRanges r;
  for (const char* item : items) EXPECT_EQ(r.add(item), "") << item;
  return r;
}

TEST(IpRanges, EmptyMatchesNothing) {
  IpRanges r;
  EXPECT_TRUE(r.empty());
  EXPECT_FALSE(r.contains("127.0.0.1"));
  EXPECT_FALSE(r.contains("::1"));
}

TEST(IpRanges, Ipv4Cidr) {
  const auto r = ranges({"10.0.0.0/8", "192.168.1.7"});
  EXPECT_FALSE(r.empty());
  EXPECT_TRUE(r.contains("10.0.0.0"));
  EXPECT_TRUE(r.contains("10.255.255.255"));
  EXPECT_FALSE(r.contains("11.0.0.0"));
  EXPECT_FALSE(r.contains("9.255.255.255"));
  EXPECT_TRUE(r.contains("192.168.1.7"));
  EXPECT_FALSE(r.contains("192.168.1.6"));
  EXPECT_FALSE(r.contains("192.168.1.8"));
}

TEST(IpRanges, NonOctetPrefix) {
  const auto r = ranges({"172.16.0.0/12", "100.64.0.0/10"});
  EXPECT_TRUE(r.contains("172.31.255.255"));
  EXPECT_FALSE(r.contains("172.32.0.0"));
  EXPECT_FALSE(r.contains("172.15.255.255"));
  EXPECT_TRUE(r.contains("100.127.0.1"));
  EXPECT_FALSE(r.contains("100.128.0.1"));
}

TEST(IpRanges, Slash32AndSlash0) {
  const auto host = ranges({"203.0.113.9/32"});
  EXPECT_TRUE(host.contains("203.0.113.9"));
  EXPECT_FALSE(host.contains("203.0.113.8"));

  const auto all = ranges({"0.0.0.0/0"});
  EXPECT_TRUE(all.contains("0.0.0.0"));
  EXPECT_TRUE(all.contains("255.255.255.255"));
  EXPECT_TRUE(all.contains("::ffff:1.2.3.4"));
  EXPECT_FALSE(all.contains("::1"));  // an IPv4 range says nothing about IPv6
}

TEST(IpRanges, Ipv6) {
  const auto r = ranges({"2001:db8::/32", "::1", "fe80::/10"});
  EXPECT_TRUE(r.contains("::1"));
  EXPECT_TRUE(r.contains("0:0:0:0:0:0:0:1"));
  EXPECT_FALSE(r.contains("::2"));
  EXPECT_TRUE(r.contains("2001:db8::"));
  EXPECT_TRUE(r.contains("2001:DB8:ffff:ffff:ffff:ffff:ffff:ffff"));
  EXPECT_FALSE(r.contains("2001:db9::"));
  EXPECT_TRUE(r.contains("febf::1"));
  EXPECT_FALSE(r.contains("fec0::1"));
  EXPECT_FALSE(r.contains("127.0.0.1"));
}

TEST(IpRanges, Ipv6ZoneIsIgnored) {
  const auto r = ranges({"fe80::/10"});
  EXPECT_TRUE(r.contains("fe80::1%eth0"));
  EXPECT_FALSE(r.contains("10.0.0.1%eth0"));
}

TEST(IpRanges, Slash128AndSlash0) {
  const auto host = ranges({"2001:db8::7/128"});
  EXPECT_TRUE(host.contains("2001:db8::7"));
  EXPECT_FALSE(host.contains("2001:db8::6"));
  EXPECT_FALSE(host.contains("2001:db8::8"));

  const auto all = ranges({"::/0"});
  EXPECT_TRUE(all.contains("::"));
  EXPECT_TRUE(all.contains("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"));
  // Mapped addresses are IPv4 clients, and ::/0 is "all IPv6".
  EXPECT_FALSE(all.contains("::ffff:10.1.2.3"));
  EXPECT_FALSE(all.contains("10.1.2.3"));
}

TEST(IpRanges, MappedIpv4MatchesIpv4Ranges) {
  const auto r = ranges({"10.0.0.0/8"});
  EXPECT_TRUE(r.contains("::ffff:10.1.2.3"));
  EXPECT_TRUE(r.contains("::FFFF:10.1.2.3"));
  EXPECT_TRUE(r.contains("::ffff:a01:203"));  // same address in hex groups
  EXPECT_FALSE(r.contains("::ffff:11.1.2.3"));
  // IPv4-compatible (deprecated) and NAT64 forms are not IPv4-mapped.
  EXPECT_FALSE(r.contains("::10.1.2.3"));
  EXPECT_FALSE(r.contains("64:ff9b::10.1.2.3"));
}

TEST(IpRanges, MappedRangeActsAsIpv4Range) {
  const auto r = ranges({"::ffff:10.0.0.0/104", "::ffff:192.0.2.1"});
  EXPECT_TRUE(r.contains("10.9.9.9"));
  EXPECT_TRUE(r.contains("::ffff:10.9.9.9"));
  EXPECT_FALSE(r.contains("11.0.0.0"));
  EXPECT_TRUE(r.contains("192.0.2.1"));
  EXPECT_FALSE(r.contains("192.0.2.2"));
}

TEST(IpRanges, BadPrefixes) {
  IpRanges r;
  EXPECT_EQ(r.add("10.0.0.0/33"), "'10.0.0.0/33': prefix length must be 0-32");
  EXPECT_EQ(r.add("::/129"), "'::/129': prefix length must be 0-128");
  EXPECT_EQ(r.add("10.0.0.0/"), "'10.0.0.0/': prefix length must be 0-32");
  EXPECT_EQ(r.add("10.0.0.0/-1"), "'10.0.0.0/-1': prefix length must be 0-32");
  EXPECT_EQ(r.add("10.0.0.0/+8"), "'10.0.0.0/+8': prefix length must be 0-32");
  EXPECT_EQ(r.add("10.0.0.0/8x"), "'10.0.0.0/8x': prefix length must be 0-32");
  EXPECT_EQ(r.add("10.0.0.0/ 8"), "'10.0.0.0/ 8': prefix length must be 0-32");
  EXPECT_EQ(r.add("10.0.0.0/8/8"), "'10.0.0.0/8/8': prefix length must be 0-32");
  EXPECT_EQ(r.add("10.0.0.0/4294967304"), "'10.0.0.0/4294967304': prefix length must be 0-32");
  EXPECT_EQ(r.add("2001:db8::/99999"), "'2001:db8::/99999': prefix length must be 0-128");
  EXPECT_TRUE(r.empty());
}

TEST(IpRanges, HostBitsSet) {
  IpRanges r;
  EXPECT_EQ(r.add("10.0.0.1/8"), "'10.0.0.1/8': host bits set; did you mean 10.0.0.0/8?");
  EXPECT_EQ(r.add("172.31.0.0/12"), "'172.31.0.0/12': host bits set; did you mean 172.16.0.0/12?");
  EXPECT_EQ(r.add("1.2.3.4/0"), "'1.2.3.4/0': host bits set; did you mean 0.0.0.0/0?");
  EXPECT_EQ(r.add("2001:db8::1/32"), "'2001:db8::1/32': host bits set; did you mean 2001:db8::/32?");
  EXPECT_EQ(r.add("::1/0"), "'::1/0': host bits set; did you mean ::/0?");
  EXPECT_TRUE(r.empty());
}

TEST(IpRanges, Garbage) {
  IpRanges r;
  EXPECT_EQ(r.add("abc"), "'abc': not an IP address or CIDR range");
  EXPECT_EQ(r.add(""), "'': not an IP address or CIDR range");
  EXPECT_EQ(r.add("/8"), "'/8': not an IP address or CIDR range");
  EXPECT_EQ(r.add("10.0.0/8"), "'10.0.0/8': not an IP address or CIDR range");
  EXPECT_EQ(r.add("256.0.0.0"), "'256.0.0.0': not an IP address or CIDR range");
  EXPECT_EQ(r.add("010.0.0.1"), "'010.0.0.1': not an IP address or CIDR range");
  EXPECT_EQ(r.add(" 10.0.0.1"), "' 10.0.0.1': not an IP address or CIDR range");
  EXPECT_EQ(r.add("1::2::3"), "'1::2::3': not an IP address or CIDR range");
  EXPECT_EQ(r.add("fe80::1%eth0"), "'fe80::1%eth0': not an IP address or CIDR range");
  EXPECT_NE(r.add(std::string("10.0.0.1\0junk", 13)), "");
  EXPECT_TRUE(r.empty());
}

TEST(IpRanges, ContainsGarbageIsFalse) {
  const auto r = ranges({"0.0.0.0/0", "::/0"});
  for (const char* bad : {"", "abc", "1.2.3", "1.2.3.4.5", "::g", "[::1]", "1.2.3.4:80", "10.0.0.0/8", " 1.2.3.4",
                          "1.2.3.4 ", "%eth0"}) {
    EXPECT_FALSE(r.contains(bad)) << bad;
  }
  EXPECT_FALSE(r.contains(std::string("1.2.3.4\0", 8)));
  EXPECT_FALSE(r.contains(std::string(1000, '1')));
}

}  // namespace
}  // namespace postern::policy
