#include "edge/forwarding.hpp"

#include <gtest/gtest.h>

namespace postern::edge {
namespace {

policy::IpRanges ranges(std::initializer_list<const char*> cidrs) {
  policy::IpRanges r;
  for (const char* c : cidrs) EXPECT_EQ(r.add(c), "");
  return r;
}

TEST(Forwarding, AClientsOwnForwardingHeadersAreDroppedFromAnUntrustedPeer) {
  const auto none = ranges({});
  const auto a = client_address("198.51.100.7", none, "10.6.6.6", "for=10.6.6.6;by=x", "https", "api.example.com");
  EXPECT_EQ(a.client_ip, "198.51.100.7");
  EXPECT_EQ(a.x_forwarded_for, "198.51.100.7");
  EXPECT_EQ(a.forwarded, "for=198.51.100.7;proto=https;host=\"api.example.com\"");
}

TEST(Forwarding, ATrustedProxysHeadersAreKeptAndExtended) {
  const auto lb = ranges({"10.0.0.0/8"});
  const auto a = client_address("10.1.2.3", lb, "203.0.113.9", "for=203.0.113.9", "http", "h");
  EXPECT_EQ(a.client_ip, "203.0.113.9");
  EXPECT_EQ(a.x_forwarded_for, "203.0.113.9, 10.1.2.3");
  EXPECT_EQ(a.forwarded, "for=203.0.113.9, for=10.1.2.3;proto=http;host=\"h\"");
}

TEST(Forwarding, TheClientIsTheRightmostUntrustedAddress) {
  const auto lb = ranges({"10.0.0.0/8"});
  // A client that writes its own X-Forwarded-For gets it kept, but cannot
  // choose the address policies see: the proxy appended the real one.
  auto a = client_address("10.1.2.3", lb, "6.6.6.6, 203.0.113.9, 10.9.9.9", "", "http", "");
  EXPECT_EQ(a.client_ip, "203.0.113.9");
  // Only trusted hops: the leftmost.
  a = client_address("10.1.2.3", lb, "10.4.4.4", "", "http", "");
  EXPECT_EQ(a.client_ip, "10.4.4.4");
  // A token that is no address stops the walk at the proxy that wrote it.
  a = client_address("10.1.2.3", lb, "203.0.113.9, garbage", "", "http", "");
  EXPECT_EQ(a.client_ip, "10.1.2.3");
  // No header from a trusted peer: the peer.
  a = client_address("10.1.2.3", lb, "", "", "http", "");
  EXPECT_EQ(a.client_ip, "10.1.2.3");
  EXPECT_EQ(a.x_forwarded_for, "10.1.2.3");
}

TEST(Forwarding, IPv6NodesAreBracketedAndQuoted) {
  const auto a = client_address("2001:db8::1", ranges({}), "", "", "https", "");
  EXPECT_EQ(a.forwarded, "for=\"[2001:db8::1]\";proto=https");
}

TEST(Forwarding, HostValues) {
  for (std::string_view h : {"api.example.com", "api.example.com:8443", "127.0.0.1:80", "[::1]:8080", "[2001:db8::1]",
                             "under_score.local"}) {
    EXPECT_FALSE(host_problem(h)) << h << ": " << *host_problem(h);
  }
  for (std::string_view h : {"", "a\";for=10.6.6.6;by=\"x", "a b", "a:", "a:99999", "a:8x", "[::1", "[::1]x",
                             "[::1]:", ":80", "a/b", "a\\b"}) {
    EXPECT_TRUE(host_problem(h)) << h;
  }
}

}  // namespace
}  // namespace postern::edge
