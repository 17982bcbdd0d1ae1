#include "common/policy/cors.hpp"

#include <gtest/gtest.h>

#include "postern/policy/v1/policy.pb.h"

namespace postern::policy {
namespace {

std::string field(const CorsHeaders& h, std::string_view name) {
  for (const auto& [n, v] : h) {
    if (n == name) return v;
  }
  return "<none>";
}

v1::Cors app_only() {
  v1::Cors c;
  c.add_allowed_origins("https://app.example.com");
  c.add_allowed_methods("GET");
  c.add_allowed_methods("PUT");
  c.add_allowed_headers("Content-Type");
  c.add_allowed_headers("X-API-Key");
  c.add_exposed_headers("X-Request-Id");
  c.set_allow_credentials(true);
  c.mutable_max_age()->set_seconds(600);
  return c;
}

TEST(Cors, APreflightFromAnAllowedOriginGetsTheAllowance) {
  EXPECT_TRUE(is_preflight("OPTIONS", "https://app.example.com", "PUT"));
  EXPECT_FALSE(is_preflight("OPTIONS", "", "PUT"));
  EXPECT_FALSE(is_preflight("OPTIONS", "https://app.example.com", ""));
  const auto a = preflight(app_only(), "https://app.example.com", "PUT", "content-type, x-api-key");
  ASSERT_EQ(a.status, 204) << a.problem;
  EXPECT_EQ(field(a.headers, "Access-Control-Allow-Origin"), "https://app.example.com");
  EXPECT_EQ(field(a.headers, "Vary"), "Origin");
  EXPECT_EQ(field(a.headers, "Access-Control-Allow-Credentials"), "true");
  EXPECT_EQ(field(a.headers, "Access-Control-Allow-Methods"), "GET, PUT");
  EXPECT_EQ(field(a.headers, "Access-Control-Allow-Headers"), "content-type, x-api-key");
  EXPECT_EQ(field(a.headers, "Access-Control-Max-Age"), "600");
}

TEST(Cors, WhatIsNotAllowedIsRefusedNamingIt) {
  const auto c = app_only();
  auto a = preflight(c, "https://evil.example", "GET", "");
  EXPECT_EQ(a.status, 403);
  EXPECT_NE(a.problem.find("origin 'https://evil.example'"), std::string::npos) << a.problem;
  a = preflight(c, "https://app.example.com", "DELETE", "");
  EXPECT_EQ(a.status, 403);
  EXPECT_NE(a.problem.find("method DELETE"), std::string::npos) << a.problem;
  a = preflight(c, "https://app.example.com", "GET", "content-type, x-secret");
  EXPECT_EQ(a.status, 403);
  EXPECT_NE(a.problem.find("'x-secret'"), std::string::npos) << a.problem;
  EXPECT_TRUE(response_headers(c, "https://evil.example").empty());
  EXPECT_TRUE(response_headers(c, "").empty());
}

TEST(Cors, ResponsesToAnAllowedOriginAndAnyOrigin) {
  const auto h = response_headers(app_only(), "https://app.example.com");
  EXPECT_EQ(field(h, "Access-Control-Allow-Origin"), "https://app.example.com");
  EXPECT_EQ(field(h, "Access-Control-Expose-Headers"), "X-Request-Id");
  v1::Cors any;
  any.add_allowed_origins("*");
  const auto a = response_headers(any, "https://whoever.example");
  EXPECT_EQ(field(a, "Access-Control-Allow-Origin"), "*");
  EXPECT_EQ(field(a, "Vary"), "<none>");
  // Default methods, default max age.
  const auto p = preflight(any, "https://whoever.example", "POST", "");
  EXPECT_EQ(p.status, 204);
  EXPECT_EQ(field(p.headers, "Access-Control-Allow-Methods"), "GET, HEAD, POST");
  EXPECT_EQ(field(p.headers, "Access-Control-Max-Age"), "600");
  EXPECT_EQ(preflight(any, "https://whoever.example", "DELETE", "").status, 403);
}

}  // namespace
}  // namespace postern::policy
