#include "common/config/checks.hpp"

#include <gtest/gtest.h>

#include <stdexcept>

namespace postern::config {
namespace {

TEST(Checks, AThrownMessageNamingAFieldWithinTheCheckedOneKeepsItsPath) {
  Checks c;
  c.run("broker.tls", [] { throw std::runtime_error("broker.tls.ca_file: bad CA bundle '/x'"); });
  c.run("listeners[0].tls", [] { throw std::runtime_error("listeners[0].tls: key does not match"); });
  c.run("apis", [] { throw std::invalid_argument("apis[2].routing: bad URL"); });
  c.run("aliases[x].url", [] { throw std::invalid_argument("URL 'ftp://x' must start with http://"); });
  // A colon inside the message is not a path.
  c.run("tls", [] { throw std::runtime_error("tlsx: no"); });
  ASSERT_EQ(c.issues().size(), 5u);
  EXPECT_EQ(c.issues()[0].field, "broker.tls.ca_file");
  EXPECT_EQ(c.issues()[0].message, "bad CA bundle '/x'");
  EXPECT_EQ(c.issues()[1].field, "listeners[0].tls");
  EXPECT_EQ(c.issues()[1].message, "key does not match");
  EXPECT_EQ(c.issues()[2].field, "apis[2].routing");
  EXPECT_EQ(c.issues()[3].field, "aliases[x].url");
  EXPECT_EQ(c.issues()[3].message, "URL 'ftp://x' must start with http://");
  EXPECT_EQ(c.issues()[4].field, "tls");
  EXPECT_EQ(c.issues()[4].message, "tlsx: no");
  EXPECT_THROW(c.throw_if_any(), std::runtime_error);
}

TEST(Checks, HostPortAndListenAddresses) {
  Checks c;
  check_host_port(c, "a", "broker:7443");
  check_host_port(c, "b", "[::1]:7443");
  EXPECT_TRUE(c.empty());
  check_host_port(c, "c", "nohost");
  check_host_port(c, "d", "host:0");
  check_host_port(c, "e", "host:99999");
  check_host_port(c, "f", "host:x");
  check_listen(c, "g", "", false);
  check_listen(c, "h", "", true);
  check_listen(c, "i", "0.0.0.0:70000", true);
  ASSERT_EQ(c.issues().size(), 6u);
  EXPECT_EQ(c.issues()[0].message, "expected host:port, got 'nohost'");
  EXPECT_EQ(c.issues()[1].field, "d");
  EXPECT_EQ(c.issues()[4].field, "h");
  EXPECT_EQ(c.issues()[5].field, "i");
}

}  // namespace
}  // namespace postern::config
