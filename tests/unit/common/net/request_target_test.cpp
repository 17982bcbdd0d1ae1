#include "common/net/request_target.hpp"

#include <gtest/gtest.h>

#include <string>

namespace postern::net {
namespace {

std::string ok(std::string_view target) {
  const auto n = normalize_target(target);
  EXPECT_TRUE(n.ok()) << target << ": " << n.error;
  return n.target;
}

std::string refused(std::string_view target) {
  const auto n = normalize_target(target);
  EXPECT_FALSE(n.ok()) << target << " was accepted as " << n.target;
  return n.error;
}

TEST(RequestTarget, PlainPathsAndQueriesPassUnchanged) {
  EXPECT_EQ(ok("/"), "/");
  EXPECT_EQ(ok("/gateway/demo/1.0/headers"), "/gateway/demo/1.0/headers");
  EXPECT_EQ(ok("/a/b/"), "/a/b/");
  EXPECT_EQ(ok("/a//b"), "/a//b");
  EXPECT_EQ(ok("/a?x=../y&z=%2F"), "/a?x=../y&z=%2F");  // the query is the native service's
  EXPECT_EQ(ok("/a;v=1/b"), "/a;v=1/b");
}

TEST(RequestTarget, DotSegmentsAreRemoved) {
  EXPECT_EQ(ok("/gateway/filespub/1.0/../priv/secret.txt"), "/gateway/filespub/priv/secret.txt");
  EXPECT_EQ(ok("/a/./b/../c"), "/a/c");
  EXPECT_EQ(ok("/a/b/.."), "/a/");
  EXPECT_EQ(ok("/a/b/."), "/a/b/");
  EXPECT_EQ(ok("/../../etc/passwd"), "/etc/passwd");  // never above the root
  EXPECT_EQ(ok("/.."), "/");
  EXPECT_EQ(ok("/a/..?q=1"), "/?q=1");
  EXPECT_EQ(ok("/a/...b/..c"), "/a/...b/..c");  // not dot segments
}

TEST(RequestTarget, UnreservedEscapesAreDecodedOthersUpperCased) {
  EXPECT_EQ(ok("/%7Euser/%61bc"), "/~user/abc");
  EXPECT_EQ(ok("/a%20b/%c3%a9"), "/a%20b/%C3%A9");
  EXPECT_EQ(ok("/a%3fb"), "/a%3Fb");
}

TEST(RequestTarget, EncodedSeparatorsAndDotSegmentsAreRefused) {
  EXPECT_NE(refused("/gateway/filespub/1.0/%2e%2e/priv/secret.txt").find("encoded dot"), std::string::npos);
  EXPECT_NE(refused("/a/.%2E/b").find("encoded dot"), std::string::npos);
  EXPECT_NE(refused("/a/%2e/b").find("encoded dot"), std::string::npos);
  EXPECT_NE(refused("/gateway/filespub/1.0/..%2fpriv/secret.txt").find("'/'"), std::string::npos);
  EXPECT_NE(refused("/a%2Fb").find("'/'"), std::string::npos);
  EXPECT_NE(refused("/a%5cb").find("'\\'"), std::string::npos);
  EXPECT_NE(refused("/a\\b").find("'\\'"), std::string::npos);
  EXPECT_NE(refused("/a%00b").find("NUL"), std::string::npos);
  EXPECT_NE(refused("/a/..;/b").find("parameters"), std::string::npos);
  EXPECT_NE(refused("/a/.;x/b").find("parameters"), std::string::npos);
}

TEST(RequestTarget, MalformedTargetsAreRefused) {
  EXPECT_NE(refused("").find("origin-form"), std::string::npos);
  EXPECT_NE(refused("*").find("origin-form"), std::string::npos);
  EXPECT_NE(refused("http://host/a").find("origin-form"), std::string::npos);
  EXPECT_NE(refused("/a%zzb").find("malformed"), std::string::npos);
  EXPECT_NE(refused("/a%4").find("malformed"), std::string::npos);
  EXPECT_NE(refused("/a%").find("malformed"), std::string::npos);
}

TEST(RequestTarget, NormalisedTargetsAreFixedPoints) {
  for (std::string_view t : {"/", "/a/b", "/a/", "/x%20y?q=../", "/~u"}) EXPECT_TRUE(is_normalized_target(t)) << t;
  for (std::string_view t : {"/a/../b", "/%7Eu", "/a%2fb", "a", "/a/%2e%2e/b"}) {
    EXPECT_FALSE(is_normalized_target(t)) << t;
  }
}

}  // namespace
}  // namespace postern::net
