#include "common/policy/response_rewrite.hpp"

#include <gtest/gtest.h>

#include "postern/tunnel/v1/tunnel.pb.h"

namespace postern::policy {
namespace {

RewriteRules rules(std::string native_base, std::string public_base = "/gateway/orders/1.0") {
  RewriteRules r;
  r.public_base = std::move(public_base);
  r.host = "10.0.0.7";
  r.port = "8080";
  r.native_base = std::move(native_base);
  return r;
}

TEST(ResponseRewrite, NativeUrlsBecomeThePublicBasePath) {
  const auto r = rules("/app");
  EXPECT_EQ(rewrite_location(r, "http://10.0.0.7:8080/app/login?next=%2F"), "/gateway/orders/1.0/login?next=%2F");
  EXPECT_EQ(rewrite_location(r, "HTTP://10.0.0.7:8080/app"), "/gateway/orders/1.0/");
  EXPECT_EQ(rewrite_location(r, "/app/login"), "/gateway/orders/1.0/login");
  // Outside the native base, another host, another port or scheme,
  // relative references: unchanged.
  EXPECT_EQ(rewrite_location(r, "/other"), "/other");
  EXPECT_EQ(rewrite_location(r, "/application"), "/application");
  EXPECT_EQ(rewrite_location(r, "https://idp.example.com/login"), "https://idp.example.com/login");
  EXPECT_EQ(rewrite_location(r, "http://10.0.0.7:9090/app/x"), "http://10.0.0.7:9090/app/x");
  EXPECT_EQ(rewrite_location(r, "https://10.0.0.7:8080/app/x"), "https://10.0.0.7:8080/app/x");
  EXPECT_EQ(rewrite_location(r, "login"), "login");
  EXPECT_EQ(rewrite_location(r, "//10.0.0.7:8080/app/x"), "//10.0.0.7:8080/app/x");
  // A native service at its root: every path-absolute reference is its own.
  const auto root = rules("");
  EXPECT_EQ(rewrite_location(root, "http://10.0.0.7:8080/login"), "/gateway/orders/1.0/login");
  EXPECT_EQ(rewrite_location(root, "/login"), "/gateway/orders/1.0/login");
  EXPECT_EQ(rewrite_location(root, "http://10.0.0.7:8080"), "/gateway/orders/1.0/");
}

TEST(ResponseRewrite, DefaultPortsAndExplicitRulesAndOff) {
  auto r = rules("");
  r.port = "80";
  EXPECT_EQ(rewrite_location(r, "http://10.0.0.7/x"), "/gateway/orders/1.0/x");
  EXPECT_EQ(rewrite_location(r, "http://10.0.0.7:80/x"), "/gateway/orders/1.0/x");
  r.prefixes = {{"https://idp.internal/", "https://login.example.com/"}};
  EXPECT_EQ(rewrite_location(r, "https://idp.internal/start"), "https://login.example.com/start");
  r.off = true;
  EXPECT_EQ(rewrite_location(r, "http://10.0.0.7/x"), "http://10.0.0.7/x");
  EXPECT_EQ(rewrite_set_cookie(r, "a=1; Domain=10.0.0.7; Path=/"), "a=1; Domain=10.0.0.7; Path=/");
}

TEST(ResponseRewrite, CookiesLoseTheNativeDomainAndGetThePublicPath) {
  const auto r = rules("/app");
  EXPECT_EQ(rewrite_set_cookie(r, "session=x; Domain=10.0.0.7; Path=/app; HttpOnly"),
            "session=x; Path=/gateway/orders/1.0; HttpOnly");
  EXPECT_EQ(rewrite_set_cookie(r, "session=x; domain=.10.0.0.7; path=/app/cart"), "session=x; Path=/gateway/orders/1.0/cart");
  // Another domain, a path outside the base, no attributes: unchanged.
  EXPECT_EQ(rewrite_set_cookie(r, "a=1; Domain=example.com; Path=/other"), "a=1; Domain=example.com; Path=/other");
  EXPECT_EQ(rewrite_set_cookie(r, "a=1"), "a=1");
  EXPECT_EQ(rewrite_set_cookie(rules(""), "a=1; Path=/"), "a=1; Path=/gateway/orders/1.0");
}

TEST(ResponseRewrite, AHeadHasEachOfItsHeadersRewritten) {
  tunnel::v1::ResponseHead head;
  auto add = [&](const char* n, const char* v) {
    auto* h = head.add_headers();
    h->set_name(n);
    h->set_value(v);
  };
  add("Location", "http://10.0.0.7:8080/app/a");
  add("content-location", "/app/b");
  add("Set-Cookie", "s=1; Path=/app");
  add("Link", "</app/c>");
  rewrite_response_head(rules("/app"), head);
  EXPECT_EQ(head.headers(0).value(), "/gateway/orders/1.0/a");
  EXPECT_EQ(head.headers(1).value(), "/gateway/orders/1.0/b");
  EXPECT_EQ(head.headers(2).value(), "s=1; Path=/gateway/orders/1.0");
  EXPECT_EQ(head.headers(3).value(), "</app/c>");
}

}  // namespace
}  // namespace postern::policy
