#include "common/policy/engine.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "common/config/yaml_proto.hpp"
#include "common/crypto/password.hpp"
#include "common/policy/codec.hpp"
#include "common/policy/invocation.hpp"
#include "common/policy/jwt.hpp"
#include "support/jwt_keys.hpp"

namespace postern::policy {
namespace {

namespace tv1 = tunnel::v1;
using namespace std::chrono_literals;
using std::chrono::seconds;
using std::chrono::system_clock;

constexpr long long kNow = 1'700'000'000;
const system_clock::time_point kNowTp{seconds(kNow)};

// ---------------------------------------------------------------- JWT helpers

using postern::testing::PkeyPtr;

std::string rsa_jwks(EVP_PKEY* pkey) { return postern::testing::jwks({postern::testing::rsa_jwk(pkey, "k1")}); }

std::string rs256_token(EVP_PKEY* pkey, const std::string& payload) {
  return postern::testing::signed_jwt(pkey, R"({"alg":"RS256","kid":"k1"})", payload);
}

std::string jwt_for(const std::string& sub, long long exp) {
  return R"({"sub":")" + sub + R"(","exp":)" + std::to_string(exp) + "}";
}

// ---------------------------------------------------------------- the catalog under test

constexpr const char* kKeyAlpha = "key-alpha-7f3a";
constexpr const char* kKeyBravo = "key-bravo-91c2";
constexpr const char* kKeyCharlie = "key-charlie-0d4e";

struct World {
  PkeyPtr rsa;
  std::shared_ptr<const Catalog> catalog;
};

const World& world() {
  static const World w = [] {
    World x;
    x.rsa = postern::testing::make_rsa_key();
    pv1::Snapshot s;
    s.set_version(1);
    config::load_yaml_string(R"(
apis:
  - {name: orders, base_path: /orders, routing: "apigateway://A/orders", policies: {identify: {identifiers: [API_KEY]}}}
  - name: custom
    base_path: /custom
    routing: "apigateway://A/custom"
    policies: {identify: {identifiers: [API_KEY], api_key_header: X-Api-Token, api_key_query: token, realm: shop}}
  - name: anon
    base_path: /anon
    routing: "apigateway://A/anon"
    policies: {identify: {identifiers: [API_KEY], allow_anonymous: true}}
  - {name: byip, base_path: /byip, routing: "apigateway://A/byip", policies: {identify: {identifiers: [IP]}}}
  - {name: byhost, base_path: /byhost, routing: "apigateway://A/byhost", policies: {identify: {identifiers: [HOST]}}}
  - {name: any, base_path: /any, routing: "apigateway://A/any", policies: {identify: {identifiers: [API_KEY, IP]}}}
  - name: all
    base_path: /all
    routing: "apigateway://A/all"
    policies: {identify: {identifiers: [API_KEY, IP], condition: ALL}}
  - {name: basic, base_path: /basic, routing: "apigateway://A/basic", policies: {identify: {identifiers: [BASIC]}}}
  - {name: jwt, base_path: /jwt, routing: "apigateway://A/jwt", policies: {identify: {identifiers: [JWT]}}}
  - {name: open, base_path: /open, routing: "apigateway://A/open"}
  - {name: private, base_path: /private, routing: "apigateway://A/private", policies: {identify: {identifiers: [API_KEY]}}}
  - {name: rate, base_path: /rate, routing: "apigateway://A/rate", policies: {throttling: {rate: [{requests: 2, per: 1s}]}}}
  - name: perapp
    base_path: /perapp
    routing: "apigateway://A/perapp"
    policies: {throttling: {rate: [{key: APPLICATION, requests: 1, per: 1m}]}}
  - name: perip
    base_path: /perip
    routing: "apigateway://A/perip"
    policies: {throttling: {rate: [{key: IP, requests: 1, per: 1m}]}}
  - name: conc
    base_path: /conc
    routing: "apigateway://A/conc"
    policies: {throttling: {concurrency: [{max: 1, retry_after: 3s}]}}
  - name: conc2
    base_path: /conc2
    routing: "apigateway://A/conc2"
    policies: {throttling: {concurrency: [{max: 2}, {key: IP, max: 1}]}}
applications:
  - name: alpha
    api_keys: [{sha256: )" + sha256_hex(kKeyAlpha) + R"(}]
    ip_ranges: ["10.1.0.0/16"]
    hostnames: [Alpha.Example.com]
    jwt_subjects: [alice]
    basic: [{username: ann, password_hash: ")" + postern::crypto::hash_password("pw-ann", 100000) + R"("}]
    apis: [orders, custom, anon, byip, byhost, any, all, basic, jwt]
  - name: bravo
    api_keys: [{sha256: )" + sha256_hex(kKeyBravo) + R"(}]
    ip_ranges: ["10.2.0.0/16"]
    hostnames: [bravo.example.com]
    apis: [orders, all]
  - {name: charlie, api_keys: [{sha256: )" + sha256_hex(kKeyCharlie) + R"(}], apis: [private]}
)",
                             "policy.yaml", *s.mutable_config());
    for (auto& api : *s.mutable_config()->mutable_apis()) {
      if (api.name() == "jwt") api.mutable_policies()->mutable_identify()->mutable_jwt()->set_jwks(rsa_jwks(x.rsa.get()));
    }
    std::vector<Issue> issues;
    x.catalog = Catalog::compile(std::move(s), issues);
    if (!x.catalog) throw std::runtime_error("catalog: " + issues.front().path + ": " + issues.front().message);
    return x;
  }();
  return w;
}

const Catalog& catalog() { return *world().catalog; }

const CompiledApi& api(const std::string& name) {
  const CompiledApi* a = catalog().api(name);
  if (!a) throw std::runtime_error("no API " + name);
  return *a;
}

// ---------------------------------------------------------------- request helpers

using Fields = std::vector<std::pair<std::string, std::string>>;

tv1::RequestHead request(const std::string& target, const Fields& headers = {},
                         const std::string& client_ip = "192.0.2.1") {
  tv1::RequestHead h;
  h.set_request_id("req-1");
  h.set_method("GET");
  h.set_target(target);
  h.set_client_ip(client_ip);
  for (const auto& [n, v] : headers) {
    auto* x = h.add_headers();
    x->set_name(n);
    x->set_value(v);
  }
  return h;
}

template <class Head>
Fields fields(const Head& head) {
  Fields out;
  for (const auto& h : head.headers()) out.emplace_back(h.name(), h.value());
  return out;
}

std::optional<std::string> header(const Fields& f, const std::string& name) {
  for (const auto& [n, v] : f) {
    if (n == name) return v;
  }
  return std::nullopt;
}

struct Outcome {
  Verdict verdict;
  Identity identity;
  Decisions decisions;
  tv1::RequestHead head;
};

Outcome run_identify(const std::string& api_name, tv1::RequestHead head, std::string_view host = "",
                     system_clock::time_point now = kNowTp) {
  Outcome o;
  o.head = std::move(head);
  // What BasicVerifier does off the service's thread, here inline.
  if (auto creds = basic_to_check(catalog(), api(api_name), o.head)) catalog().verify_basic(creds->first, creds->second);
  o.verdict = identify(catalog(), api(api_name), o.head, host, now, o.identity, o.decisions);
  return o;
}

// A refusal must never hand a credential back to the client or the log.
void expect_no_secret(const Verdict& v, const std::string& secret) {
  EXPECT_EQ(v.detail.find(secret), std::string::npos) << v.detail;
  EXPECT_EQ(v.reason.find(secret), std::string::npos) << v.reason;
  for (const auto& [n, val] : v.headers) EXPECT_EQ(val.find(secret), std::string::npos) << n << ": " << val;
}

void expect_decisions(const Decisions& got, const std::vector<Decision>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(got[i].policy, want[i].policy) << i;
    EXPECT_EQ(got[i].outcome, want[i].outcome) << i;
    EXPECT_EQ(got[i].reason, want[i].reason) << i;
  }
}

// ================================================================ Threats

ThreatRules limits(std::uint64_t url, std::uint64_t count, std::uint64_t bytes, std::uint64_t body) {
  ThreatRules r;
  r.url_length.max = url;
  r.header_count.max = count;
  r.header_bytes.max = bytes;
  r.body_bytes.max = body;
  return r;
}

RequestShape shape(std::size_t url, std::size_t count, std::size_t bytes, std::optional<std::uint64_t> body,
                   std::string ip = "192.0.2.1") {
  RequestShape s;
  s.url_length = url;
  s.header_count = count;
  s.header_bytes = bytes;
  s.content_length = body;
  s.client_ip = std::move(ip);
  return s;
}

TEST(Threats, WithinEveryLimitIsAllowed) {
  Decisions d;
  const auto v = check_threats(limits(100, 10, 1000, 5000), shape(99, 9, 999, 4999), d);
  EXPECT_TRUE(v.allowed());
  EXPECT_EQ(v.status, 0u);
  expect_decisions(d, {{"threat_protection", "allowed", "ok"}});
}

TEST(Threats, ExactlyAtTheLimitIsAllowed) {
  Decisions d;
  EXPECT_TRUE(check_threats(limits(100, 10, 1000, 5000), shape(100, 10, 1000, 5000), d).allowed());
}

TEST(Threats, NoRulesAllowAnything) {
  Decisions d;
  EXPECT_TRUE(check_threats(ThreatRules{}, shape(1 << 20, 10000, 1 << 24, std::uint64_t{1} << 40), d).allowed());
}

TEST(Threats, UrlTooLong) {
  Decisions d;
  const auto v = check_threats(limits(100, 0, 0, 0), shape(101, 1, 10, 0), d);
  EXPECT_EQ(v.status, 414u);
  EXPECT_EQ(v.policy, "threat_protection");
  EXPECT_EQ(v.reason, "url_too_long");
  EXPECT_EQ(v.detail, "request target is 101 bytes; the limit is 100");
  expect_decisions(d, {{"threat_protection", "rejected", "url_too_long"}});
}

TEST(Threats, TooManyHeaders) {
  Decisions d;
  const auto v = check_threats(limits(0, 10, 0, 0), shape(5, 11, 10, 0), d);
  EXPECT_EQ(v.status, 431u);
  EXPECT_EQ(v.reason, "too_many_headers");
  expect_decisions(d, {{"threat_protection", "rejected", "too_many_headers"}});
}

TEST(Threats, HeadersTooLarge) {
  Decisions d;
  const auto v = check_threats(limits(0, 10, 1000, 0), shape(5, 10, 1001, 0), d);
  EXPECT_EQ(v.status, 431u);
  EXPECT_EQ(v.reason, "headers_too_large");
  EXPECT_NE(v.detail.find("1001"), std::string::npos);
}

TEST(Threats, DeclaredBodyTooLarge) {
  Decisions d;
  const auto v = check_threats(limits(0, 0, 0, 5000), shape(5, 1, 10, 5001), d);
  EXPECT_EQ(v.status, 413u);
  EXPECT_EQ(v.reason, "body_too_large");
  // Chunked: nothing declared, so nothing to refuse up front.
  d.clear();
  EXPECT_TRUE(check_threats(limits(0, 0, 0, 5000), shape(5, 1, 10, std::nullopt), d).allowed());
}

TEST(Threats, IpDenyList) {
  ThreatRules r;
  ASSERT_EQ(r.deny.ranges.add("203.0.113.0/24"), "");
  r.deny.on = true;
  Decisions d;
  const auto v = check_threats(r, shape(1, 1, 1, 0, "203.0.113.9"), d);
  EXPECT_EQ(v.status, 403u);
  EXPECT_EQ(v.reason, "ip_denied");
  expect_decisions(d, {{"threat_protection", "rejected", "ip_denied"}});
  d.clear();
  EXPECT_EQ(check_threats(r, shape(1, 1, 1, 0, "::ffff:203.0.113.9"), d).status, 403u);
  d.clear();
  EXPECT_TRUE(check_threats(r, shape(1, 1, 1, 0, "198.51.100.1"), d).allowed());
}

TEST(Threats, IpAllowList) {
  ThreatRules r;
  ASSERT_EQ(r.allow.ranges.add("10.0.0.0/8"), "");
  r.allow.on = true;
  Decisions d;
  EXPECT_TRUE(check_threats(r, shape(1, 1, 1, 0, "10.200.0.1"), d).allowed());
  d.clear();
  const auto v = check_threats(r, shape(1, 1, 1, 0, "11.0.0.1"), d);
  EXPECT_EQ(v.status, 403u);
  EXPECT_EQ(v.reason, "ip_not_allowed");
  expect_decisions(d, {{"threat_protection", "rejected", "ip_not_allowed"}});
}

TEST(Threats, EmptyAllowListThatIsOnAllowsNobody) {
  ThreatRules r;
  r.allow.on = true;
  Decisions d;
  EXPECT_EQ(check_threats(r, shape(1, 1, 1, 0, "10.0.0.1"), d).status, 403u);
}

TEST(Threats, ReportOnlyRulesPassAndRecordWhatTheyWouldHaveRefused) {
  ThreatRules r = limits(10, 2, 20, 30);
  r.url_length.report_only = true;
  r.header_count.report_only = true;
  r.header_bytes.report_only = true;
  r.body_bytes.report_only = true;
  ASSERT_EQ(r.deny.ranges.add("192.0.2.0/24"), "");
  r.deny.on = true;
  r.deny.report_only = true;
  ASSERT_EQ(r.allow.ranges.add("10.0.0.0/8"), "");
  r.allow.on = true;
  r.allow.report_only = true;
  Decisions d;
  const auto v = check_threats(r, shape(11, 3, 21, 31, "192.0.2.1"), d);
  EXPECT_TRUE(v.allowed());
  expect_decisions(d, {{"threat_protection", "reported", "ip_denied"},
                       {"threat_protection", "reported", "ip_not_allowed"},
                       {"threat_protection", "reported", "url_too_long"},
                       {"threat_protection", "reported", "too_many_headers"},
                       {"threat_protection", "reported", "headers_too_large"},
                       {"threat_protection", "reported", "body_too_large"},
                       {"threat_protection", "allowed", "ok"}});
}

TEST(Threats, ReportOnlyRuleThenEnforcedRule) {
  ThreatRules r = limits(10, 2, 0, 0);
  r.url_length.report_only = true;
  Decisions d;
  const auto v = check_threats(r, shape(11, 3, 0, 0), d);
  EXPECT_EQ(v.status, 431u);
  expect_decisions(d, {{"threat_protection", "reported", "url_too_long"},
                       {"threat_protection", "rejected", "too_many_headers"}});
}

TEST(Threats, DecisionsAreAppended) {
  Decisions d{{"earlier", "allowed", "ok"}};
  check_threats(limits(10, 0, 0, 0), shape(5, 0, 0, 0), d);
  expect_decisions(d, {{"earlier", "allowed", "ok"}, {"threat_protection", "allowed", "ok"}});
}

// ================================================================ Identify

TEST(Identify, ApiKeyInHeaderIsUsedAndRemoved) {
  const auto o = run_identify(
      "orders", request("/orders/1?a=1", {{"Accept", "*/*"}, {"X-GATEWAY-APIKEY", kKeyAlpha}, {"X-Trace", "t"}}));
  EXPECT_TRUE(o.verdict.allowed()) << o.verdict.detail;
  EXPECT_EQ(o.identity.application, "alpha");
  EXPECT_FALSE(o.identity.anonymous);
  EXPECT_EQ(fields(o.head), (Fields{{"Accept", "*/*"}, {"X-Trace", "t"}}));
  EXPECT_EQ(o.head.target(), "/orders/1?a=1");
  expect_decisions(o.decisions, {{"identify", "allowed", "ok"}});
}

TEST(Identify, ApiKeyInQueryIsUsedAndRemovedKeepingOtherParameters) {
  auto o = run_identify("orders",
                        request(std::string("/orders/1?z=9&a=1&x-Gateway-APIKey=") + kKeyAlpha + "&b=2&flag&a=3"));
  EXPECT_TRUE(o.verdict.allowed()) << o.verdict.detail;
  EXPECT_EQ(o.identity.application, "alpha");
  EXPECT_EQ(o.head.target(), "/orders/1?z=9&a=1&b=2&flag&a=3");

  // The only parameter: no dangling '?'.
  o = run_identify("orders", request(std::string("/orders/1?x-Gateway-APIKey=") + kKeyAlpha));
  EXPECT_TRUE(o.verdict.allowed());
  EXPECT_EQ(o.head.target(), "/orders/1");

  // Percent-encoded key value and name.
  o = run_identify("orders", request("/orders?x-Gateway-API%4Bey=key%2Dalpha%2D7f3a&c=1"));
  EXPECT_TRUE(o.verdict.allowed()) << o.verdict.detail;
  EXPECT_EQ(o.identity.application, "alpha");
  EXPECT_EQ(o.head.target(), "/orders?c=1");
}

TEST(Identify, HeaderKeyIsPreferredAndBothAreRemoved) {
  const auto o = run_identify("orders", request(std::string("/orders?x-Gateway-APIKey=") + kKeyBravo + "&q=1",
                                                {{"x-gateway-apikey", kKeyAlpha}}));
  EXPECT_TRUE(o.verdict.allowed());
  EXPECT_EQ(o.identity.application, "alpha");
  EXPECT_TRUE(fields(o.head).empty());
  EXPECT_EQ(o.head.target(), "/orders?q=1");
}

TEST(Identify, CustomKeyHeaderAndQueryNames) {
  auto o = run_identify("custom", request("/custom/x", {{"x-api-token", kKeyAlpha}, {"Host", "h"}}));
  EXPECT_TRUE(o.verdict.allowed()) << o.verdict.detail;
  EXPECT_EQ(o.identity.application, "alpha");
  EXPECT_EQ(fields(o.head), (Fields{{"Host", "h"}}));

  o = run_identify("custom", request(std::string("/custom/x?token=") + kKeyAlpha + "&x=1"));
  EXPECT_TRUE(o.verdict.allowed()) << o.verdict.detail;
  EXPECT_EQ(o.head.target(), "/custom/x?x=1");

  // The default name means nothing to this API.
  o = run_identify("custom", request("/custom/x", {{"x-Gateway-APIKey", kKeyAlpha}}));
  EXPECT_EQ(o.verdict.status, 401u);
  EXPECT_EQ(o.verdict.reason, "missing_credential");
  EXPECT_EQ(header(o.verdict.headers, "WWW-Authenticate"),
            R"(APIKey realm="shop", header="X-Api-Token", query="token")");
}

TEST(Identify, UnknownKeyIs401WithApiKeyChallenge) {
  const std::string key = "not-a-known-key-5555";
  const auto o = run_identify("orders", request("/orders?x-Gateway-APIKey=" + key + "&a=1", {{"x-Gateway-APIKey", key}}));
  EXPECT_EQ(o.verdict.status, 401u);
  EXPECT_EQ(o.verdict.policy, "identify");
  EXPECT_EQ(o.verdict.reason, "invalid_credential");
  EXPECT_EQ(o.verdict.detail, "unknown API key");
  ASSERT_EQ(o.verdict.headers.size(), 1u);
  EXPECT_EQ(o.verdict.headers[0].first, "WWW-Authenticate");
  EXPECT_EQ(o.verdict.headers[0].second,
            R"(APIKey realm="postern", header="x-Gateway-APIKey", query="x-Gateway-APIKey")");
  expect_no_secret(o.verdict, key);
  EXPECT_TRUE(o.identity.application.empty());
  // Removed whatever the outcome.
  EXPECT_TRUE(fields(o.head).empty());
  EXPECT_EQ(o.head.target(), "/orders?a=1");
  expect_decisions(o.decisions, {{"identify", "rejected", "invalid_credential"}});
}

TEST(Identify, MissingKeyIs401) {
  const auto o = run_identify("orders", request("/orders"));
  EXPECT_EQ(o.verdict.status, 401u);
  EXPECT_EQ(o.verdict.reason, "missing_credential");
  EXPECT_NE(o.verdict.detail.find("orders"), std::string::npos);
  ASSERT_TRUE(header(o.verdict.headers, "WWW-Authenticate"));
  EXPECT_TRUE(header(o.verdict.headers, "WWW-Authenticate")->starts_with("APIKey "));
  expect_decisions(o.decisions, {{"identify", "rejected", "missing_credential"}});
}

TEST(Identify, ApplicationNotAllowedForTheApiIs403) {
  const auto o = run_identify("orders", request("/orders", {{"x-Gateway-APIKey", kKeyCharlie}}));
  EXPECT_EQ(o.verdict.status, 403u);
  EXPECT_EQ(o.verdict.reason, "not_authorized");
  EXPECT_EQ(o.verdict.detail, "application 'charlie' may not use API 'orders'");
  EXPECT_TRUE(o.verdict.headers.empty());
  EXPECT_EQ(o.identity.application, "charlie");
  expect_no_secret(o.verdict, kKeyCharlie);
  expect_decisions(o.decisions, {{"identify", "rejected", "not_authorized"}});
  EXPECT_TRUE(run_identify("private", request("/private", {{"x-Gateway-APIKey", kKeyCharlie}})).verdict.allowed());
}

TEST(Identify, AllowAnonymous) {
  auto o = run_identify("anon", request("/anon"));
  EXPECT_TRUE(o.verdict.allowed());
  EXPECT_TRUE(o.identity.anonymous);
  EXPECT_EQ(o.identity.application, "");
  expect_decisions(o.decisions, {{"identify", "allowed", "anonymous"}});

  // A key that is given must still be a good one.
  o = run_identify("anon", request("/anon", {{"x-Gateway-APIKey", "wrong-key"}}));
  EXPECT_EQ(o.verdict.status, 401u);
  EXPECT_EQ(o.verdict.reason, "invalid_credential");
  EXPECT_FALSE(o.identity.anonymous);

  o = run_identify("anon", request("/anon", {{"x-Gateway-APIKey", kKeyAlpha}}));
  EXPECT_TRUE(o.verdict.allowed());
  EXPECT_FALSE(o.identity.anonymous);
  EXPECT_EQ(o.identity.application, "alpha");

  // Identified, so still authorised.
  o = run_identify("anon", request("/anon", {{"x-Gateway-APIKey", kKeyBravo}}));
  EXPECT_EQ(o.verdict.status, 403u);
}

TEST(Identify, ByClientIp) {
  auto o = run_identify("byip", request("/byip", {}, "10.1.3.4"));
  EXPECT_TRUE(o.verdict.allowed()) << o.verdict.detail;
  EXPECT_EQ(o.identity.application, "alpha");

  o = run_identify("byip", request("/byip", {}, "10.9.9.9"));
  EXPECT_EQ(o.verdict.status, 401u);
  EXPECT_EQ(o.verdict.reason, "missing_credential");
  EXPECT_EQ(header(o.verdict.headers, "WWW-Authenticate"), R"(Postern realm="postern")");

  o = run_identify("byip", request("/byip", {}, "10.2.0.1"));
  EXPECT_EQ(o.verdict.status, 403u);
  EXPECT_EQ(o.identity.application, "bravo");
}

TEST(Identify, ByHostWithoutPortCaseInsensitive) {
  for (const char* host : {"alpha.example.com", "alpha.example.com:8443", "ALPHA.EXAMPLE.COM:80"}) {
    const auto o = run_identify("byhost", request("/byhost"), host);
    EXPECT_TRUE(o.verdict.allowed()) << host << ": " << o.verdict.detail;
    EXPECT_EQ(o.identity.application, "alpha") << host;
  }
  for (const char* host : {"", "example.com", "alpha.example.com.evil:80", "[::1]:80"}) {
    EXPECT_EQ(run_identify("byhost", request("/byhost"), host).verdict.status, 401u) << host;
  }
  EXPECT_EQ(run_identify("byhost", request("/byhost"), "bravo.example.com:443").verdict.status, 403u);
}

TEST(Identify, ConditionAnyTakesTheFirstIdentifierThatMatches) {
  auto o = run_identify("any", request("/any", {{"x-Gateway-APIKey", kKeyAlpha}}, "192.0.2.1"));
  EXPECT_TRUE(o.verdict.allowed());
  EXPECT_EQ(o.identity.application, "alpha");

  o = run_identify("any", request("/any", {}, "10.1.0.1"));
  EXPECT_TRUE(o.verdict.allowed());
  EXPECT_EQ(o.identity.application, "alpha");

  // Listed first, the key decides.
  o = run_identify("any", request("/any", {{"x-Gateway-APIKey", kKeyAlpha}}, "10.2.0.1"));
  EXPECT_TRUE(o.verdict.allowed());
  EXPECT_EQ(o.identity.application, "alpha");

  o = run_identify("any", request("/any", {}, "192.0.2.1"));
  EXPECT_EQ(o.verdict.status, 401u);
  EXPECT_EQ(o.verdict.reason, "missing_credential");
}

TEST(Identify, ConditionAllNeedsEveryIdentifierForTheSameApplication) {
  auto o = run_identify("all", request("/all", {{"x-Gateway-APIKey", kKeyAlpha}}, "10.1.0.1"));
  EXPECT_TRUE(o.verdict.allowed()) << o.verdict.detail;
  EXPECT_EQ(o.identity.application, "alpha");

  o = run_identify("all", request("/all", {{"x-Gateway-APIKey", kKeyAlpha}}, "192.0.2.1"));
  EXPECT_EQ(o.verdict.status, 401u);
  EXPECT_EQ(o.verdict.reason, "missing_credential");
  EXPECT_TRUE(o.identity.application.empty());

  o = run_identify("all", request("/all", {}, "10.1.0.1"));
  EXPECT_EQ(o.verdict.status, 401u);
  EXPECT_EQ(o.verdict.reason, "missing_credential");

  // Key of alpha from bravo's network.
  o = run_identify("all", request("/all", {{"x-Gateway-APIKey", kKeyAlpha}}, "10.2.0.1"));
  EXPECT_EQ(o.verdict.status, 401u);
  EXPECT_EQ(o.verdict.reason, "invalid_credential");
  EXPECT_EQ(o.verdict.detail, "credentials identify different applications");
  expect_no_secret(o.verdict, kKeyAlpha);

  o = run_identify("all", request("/all", {}, "192.0.2.1"));
  EXPECT_EQ(o.verdict.status, 401u);
}

std::string basic(const std::string& user_pass) { return "Basic " + base64_encode(user_pass); }

TEST(Identify, BasicCredentials) {
  auto o = run_identify("basic", request("/basic", {{"Authorization", basic("ann:pw-ann")}}));
  EXPECT_TRUE(o.verdict.allowed()) << o.verdict.detail;
  EXPECT_EQ(o.identity.application, "alpha");

  o = run_identify("basic", request("/basic", {{"authorization", "bAsIc " + base64_encode("ann:pw-ann")}}));
  EXPECT_TRUE(o.verdict.allowed()) << o.verdict.detail;

  const std::string wrong = "pw-wrong-31337";
  o = run_identify("basic", request("/basic", {{"Authorization", basic("ann:" + wrong)}}));
  EXPECT_EQ(o.verdict.status, 401u);
  EXPECT_EQ(o.verdict.reason, "invalid_credential");
  EXPECT_EQ(header(o.verdict.headers, "WWW-Authenticate"), R"(Basic realm="postern", charset="UTF-8")");
  expect_no_secret(o.verdict, wrong);
  expect_no_secret(o.verdict, base64_encode("ann:" + wrong));

  for (const std::string& bad : {std::string("Basic !!not-base64!!"), basic("no-colon-here"), std::string("Basic =")}) {
    o = run_identify("basic", request("/basic", {{"Authorization", bad}}));
    EXPECT_EQ(o.verdict.status, 401u) << bad;
    EXPECT_EQ(o.verdict.reason, "invalid_credential") << bad;
    EXPECT_EQ(o.verdict.detail, "malformed Basic credentials") << bad;
    EXPECT_TRUE(header(o.verdict.headers, "WWW-Authenticate")->starts_with("Basic ")) << bad;
  }

  o = run_identify("basic", request("/basic"));
  EXPECT_EQ(o.verdict.status, 401u);
  EXPECT_EQ(o.verdict.reason, "missing_credential");
  EXPECT_TRUE(header(o.verdict.headers, "WWW-Authenticate")->starts_with("Basic realm="));
}

// The slow hash is never computed on the caller's thread: credentials that
// nobody checked yet (BasicVerifier was busy) get 503 with Retry-After,
// never a 401 that would tell a guesser anything.
TEST(Identify, UncheckedBasicCredentialsAre503) {
  auto head = request("/basic", {{"Authorization", basic("ann:not-checked-yet")}});
  Identity id;
  Decisions d;
  const auto v = identify(catalog(), api("basic"), head, "", kNowTp, id, d);
  EXPECT_EQ(v.status, 503u);
  EXPECT_EQ(v.reason, "password_check_busy");
  EXPECT_EQ(header(v.headers, "Retry-After"), "1");
  // Unknown users need no slow hash: 401 at once.
  head = request("/basic", {{"Authorization", basic("nobody:x")}});
  EXPECT_EQ(identify(catalog(), api("basic"), head, "", kNowTp, id, d).status, 401u);
}

TEST(Identify, JwtRs256) {
  EVP_PKEY* key = world().rsa.get();
  const std::string good = rs256_token(key, jwt_for("alice", kNow + 300));
  auto o = run_identify("jwt", request("/jwt", {{"Authorization", "Bearer " + good}}));
  EXPECT_TRUE(o.verdict.allowed()) << o.verdict.detail;
  EXPECT_EQ(o.identity.application, "alpha");
  expect_decisions(o.decisions, {{"identify", "allowed", "ok"}});

  const std::string expired = rs256_token(key, jwt_for("alice", kNow - 600));
  o = run_identify("jwt", request("/jwt", {{"Authorization", "Bearer " + expired}}));
  EXPECT_EQ(o.verdict.status, 401u);
  EXPECT_EQ(o.verdict.reason, "invalid_credential");
  auto challenge = header(o.verdict.headers, "WWW-Authenticate");
  ASSERT_TRUE(challenge);
  EXPECT_TRUE(challenge->starts_with("Bearer realm=\"postern\"")) << *challenge;
  EXPECT_NE(challenge->find("error=\"invalid_token\""), std::string::npos) << *challenge;
  EXPECT_NE(challenge->find("token expired"), std::string::npos) << *challenge;
  for (const auto& part : {expired, expired.substr(expired.rfind('.') + 1)}) expect_no_secret(o.verdict, part);

  const std::string stranger = rs256_token(key, jwt_for("mallory", kNow + 300));
  o = run_identify("jwt", request("/jwt", {{"Authorization", "Bearer " + stranger}}));
  EXPECT_EQ(o.verdict.status, 401u);
  EXPECT_EQ(o.verdict.reason, "invalid_credential");
  EXPECT_NE(header(o.verdict.headers, "WWW-Authenticate")->find("error=\"invalid_token\""), std::string::npos);
  EXPECT_EQ(o.verdict.detail.find("mallory"), std::string::npos);
  expect_no_secret(o.verdict, stranger);

  o = run_identify("jwt", request("/jwt", {{"Authorization", "Bearer not.a.token"}}));
  EXPECT_EQ(o.verdict.status, 401u);
  expect_no_secret(o.verdict, "not.a.token");

  o = run_identify("jwt", request("/jwt"));
  EXPECT_EQ(o.verdict.status, 401u);
  EXPECT_EQ(o.verdict.reason, "missing_credential");
  EXPECT_EQ(header(o.verdict.headers, "WWW-Authenticate"), R"(Bearer realm="postern")");
}

TEST(Identify, NoIdentifyPolicyIsANoOp) {
  const auto o = run_identify("open", request("/open?x-Gateway-APIKey=k", {{"x-Gateway-APIKey", "k"}}));
  EXPECT_TRUE(o.verdict.allowed());
  EXPECT_TRUE(o.identity.application.empty());
  EXPECT_FALSE(o.identity.anonymous);
  EXPECT_TRUE(o.decisions.empty());
  EXPECT_EQ(o.head.target(), "/open?x-Gateway-APIKey=k");
  EXPECT_EQ(o.head.headers_size(), 1);
}

TEST(Identify, RejectionBuildsProblemJson) {
  const auto o = run_identify("orders", request("/orders", {{"x-Gateway-APIKey", "bad"}}));
  ASSERT_EQ(o.verdict.status, 401u);
  std::string body;
  const tv1::ResponseHead h = rejection(o.verdict, "req-\"42\"", body);
  EXPECT_EQ(h.status(), 401u);
  EXPECT_EQ(body,
            R"({"type":"https://postern.dev/problems/invalid-credential","title":"Unauthorized","status":401,)"
            R"("detail":"unknown API key","policy":"identify","request_id":"req-\"42\""})"
            "\n");
  EXPECT_EQ(h.content_length(), static_cast<std::int64_t>(body.size()));
  const Fields f = fields(h);
  ASSERT_EQ(f.size(), 3u);
  EXPECT_EQ(f[0], (std::pair<std::string, std::string>{"Content-Type", "application/problem+json"}));
  EXPECT_EQ(f[1], (std::pair<std::string, std::string>{"Cache-Control", "no-store"}));
  EXPECT_EQ(f[2].first, "WWW-Authenticate");
  EXPECT_TRUE(f[2].second.starts_with("APIKey "));
}

TEST(Identify, RejectionTitlesAndNoRequestId) {
  Verdict v;
  v.status = 413;
  v.policy = "threat_protection";
  v.reason = "body_too_large";
  v.detail = "line\nbreak";
  std::string body;
  auto h = rejection(v, "", body);
  EXPECT_EQ(h.status(), 413u);
  EXPECT_EQ(body,
            R"({"type":"https://postern.dev/problems/body-too-large","title":"Request refused by threat protection",)"
            R"("status":413,"detail":"line\nbreak","policy":"threat_protection"})"
            "\n");
  EXPECT_EQ(h.content_length(), static_cast<std::int64_t>(body.size()));
  EXPECT_EQ(h.headers_size(), 2);

  v.status = 503;
  v.policy = "throttling";
  v.reason = "concurrency_limit";
  v.headers = {{"Retry-After", "1"}};
  h = rejection(v, "r", body);
  EXPECT_NE(body.find(R"("title":"Service Unavailable")"), std::string::npos);
  EXPECT_EQ(header(fields(h), "Retry-After"), "1");
  v.status = 403;
  v.policy = "identify";
  rejection(v, "r", body);
  EXPECT_NE(body.find(R"("title":"Forbidden")"), std::string::npos);
}

// ================================================================ Limiter

using SteadyTp = Limiter::Clock::time_point;
const SteadyTp kT0{std::chrono::hours(1000)};

struct Admission {
  Verdict verdict;
  Decisions decisions;
};

Admission admit(Limiter& limiter, const std::string& api_name, Limiter::Hold& hold, SteadyTp now = kT0,
                const std::string& application = "", const std::string& ip = "192.0.2.1") {
  Identity id;
  id.application = application;
  id.anonymous = application.empty();
  Admission a;
  a.verdict = limiter.admit(api(api_name), id, ip, now, hold, a.decisions);
  return a;
}

Admission admit(Limiter& limiter, const std::string& api_name, SteadyTp now = kT0, const std::string& application = "",
                const std::string& ip = "192.0.2.1") {
  Limiter::Hold hold;
  return admit(limiter, api_name, hold, now, application, ip);
}

TEST(Limiter, NoThrottlingPolicyAdmitsEverything) {
  Limiter l;
  for (int i = 0; i < 100; ++i) {
    const auto a = admit(l, "open");
    EXPECT_TRUE(a.verdict.allowed());
    EXPECT_TRUE(a.decisions.empty());
  }
}

TEST(Limiter, RateLimitPerApiBurstThen429) {
  Limiter l;
  for (int i = 0; i < 2; ++i) {
    const auto a = admit(l, "rate", kT0, "", "192.0.2." + std::to_string(i));
    EXPECT_TRUE(a.verdict.allowed()) << i;
    expect_decisions(a.decisions, {{"throttling", "allowed", "ok"}});
    // Every answer says where the client stands, not only the refusal.
    EXPECT_EQ(header(a.verdict.headers, "RateLimit-Limit"), "2");
    EXPECT_EQ(header(a.verdict.headers, "RateLimit-Remaining"), std::to_string(1 - i));
    EXPECT_TRUE(header(a.verdict.headers, "RateLimit-Reset"));
  }
  EXPECT_TRUE(admit(l, "open").verdict.headers.empty()) << "no rate rule, no RateLimit headers";
  const auto a = admit(l, "rate", kT0, "alpha", "198.51.100.7");
  EXPECT_EQ(a.verdict.status, 429u);
  EXPECT_EQ(a.verdict.policy, "throttling");
  EXPECT_EQ(a.verdict.reason, "rate_limited");
  EXPECT_EQ(a.verdict.detail, "more than 2 requests per 1000 ms for this API");
  const auto retry = header(a.verdict.headers, "Retry-After");
  ASSERT_TRUE(retry);
  EXPECT_GE(std::stoll(*retry), 1);
  EXPECT_EQ(header(a.verdict.headers, "RateLimit-Limit"), "2");
  EXPECT_EQ(header(a.verdict.headers, "RateLimit-Remaining"), "0");
  EXPECT_EQ(header(a.verdict.headers, "RateLimit-Reset"), "1");
  expect_decisions(a.decisions, {{"throttling", "rejected", "rate_limited"}});
}

TEST(Limiter, RateLimitRefillsAsTimePasses) {
  Limiter l;
  EXPECT_TRUE(admit(l, "rate", kT0).verdict.allowed());
  EXPECT_TRUE(admit(l, "rate", kT0).verdict.allowed());
  EXPECT_EQ(admit(l, "rate", kT0 + 100ms).verdict.status, 429u);
  // 2 per second: one token back after half a second.
  EXPECT_TRUE(admit(l, "rate", kT0 + 500ms).verdict.allowed());
  EXPECT_EQ(admit(l, "rate", kT0 + 500ms).verdict.status, 429u);
  // Long idle: full again, but never more than the burst.
  EXPECT_TRUE(admit(l, "rate", kT0 + 60s).verdict.allowed());
  EXPECT_TRUE(admit(l, "rate", kT0 + 60s).verdict.allowed());
  EXPECT_EQ(admit(l, "rate", kT0 + 60s).verdict.status, 429u);
}

TEST(Limiter, RateLimitPerApplicationKeepsSeparateBuckets) {
  Limiter l;
  EXPECT_TRUE(admit(l, "perapp", kT0, "alpha").verdict.allowed());
  const auto a = admit(l, "perapp", kT0, "alpha");
  EXPECT_EQ(a.verdict.status, 429u);
  EXPECT_NE(a.verdict.detail.find("application"), std::string::npos);
  EXPECT_GE(std::stoll(*header(a.verdict.headers, "Retry-After")), 1);
  EXPECT_TRUE(admit(l, "perapp", kT0, "bravo").verdict.allowed());
  // Anonymous requests share one bucket.
  EXPECT_TRUE(admit(l, "perapp", kT0, "", "192.0.2.1").verdict.allowed());
  EXPECT_EQ(admit(l, "perapp", kT0, "", "192.0.2.2").verdict.status, 429u);
}

TEST(Limiter, RateLimitPerClientAddress) {
  Limiter l;
  EXPECT_TRUE(admit(l, "perip", kT0, "alpha", "192.0.2.1").verdict.allowed());
  const auto a = admit(l, "perip", kT0, "bravo", "192.0.2.1");
  EXPECT_EQ(a.verdict.status, 429u);
  EXPECT_NE(a.verdict.detail.find("client address"), std::string::npos);
  // 1 per minute: the client waits most of a minute.
  EXPECT_GE(std::stoll(*header(a.verdict.headers, "Retry-After")), 59);
  EXPECT_TRUE(admit(l, "perip", kT0, "alpha", "192.0.2.2").verdict.allowed());
  EXPECT_TRUE(admit(l, "perip", kT0 + 60s, "alpha", "192.0.2.1").verdict.allowed());
}

TEST(Limiter, ANewSnapshotReconfiguresABucketWithoutRefillingIt) {
  auto compile = [](const std::string& rate) {
    pv1::Snapshot s;
    config::load_yaml_string(
        R"(apis: [{name: r, routing: "apigateway://A", policies: {throttling: {rate: [)" + rate + "]}}}]",
        "policy.yaml", *s.mutable_config());
    std::vector<Issue> issues;
    auto cat = Catalog::compile(std::move(s), issues);
    if (!cat) throw std::runtime_error("does not compile");
    return cat;
  };
  const auto v1 = compile("{requests: 2, per: 1s}");
  const auto v2 = compile("{requests: 10, per: 1s, burst: 4}");
  Limiter l;
  Identity id;
  Decisions d;
  Limiter::Hold h;
  EXPECT_TRUE(l.admit(*v1->api("r"), id, "192.0.2.1", kT0, h, d).allowed());
  EXPECT_TRUE(l.admit(*v1->api("r"), id, "192.0.2.1", kT0, h, d).allowed());
  EXPECT_EQ(l.admit(*v1->api("r"), id, "192.0.2.1", kT0, h, d).status, 429u);
  // A reload is no reason to hand out a fresh burst.
  const auto v = l.admit(*v2->api("r"), id, "192.0.2.1", kT0, h, d);
  EXPECT_EQ(v.status, 429u);
  EXPECT_EQ(header(v.headers, "RateLimit-Limit"), "4");
  // 10 per second from now on: one token every 100 ms.
  EXPECT_TRUE(l.admit(*v2->api("r"), id, "192.0.2.1", kT0 + 100ms, h, d).allowed());
  EXPECT_EQ(l.admit(*v2->api("r"), id, "192.0.2.1", kT0 + 100ms, h, d).status, 429u);
}

TEST(Limiter, BucketsOfOneLimiterAreIndependentOfAnother) {
  Limiter a, b;
  EXPECT_TRUE(admit(a, "perip").verdict.allowed());
  EXPECT_TRUE(admit(b, "perip").verdict.allowed());
}

TEST(Limiter, ConcurrencyLimitHoldsASlotUntilTheHoldIsDestroyed) {
  Limiter l;
  const std::string key = "conc|conc0|api";
  EXPECT_EQ(l.in_use(key), 0u);
  {
    Limiter::Hold first;
    const auto a = admit(l, "conc", first);
    EXPECT_TRUE(a.verdict.allowed());
    expect_decisions(a.decisions, {{"throttling", "allowed", "ok"}});
    EXPECT_EQ(l.in_use(key), 1u);

    Limiter::Hold second;
    const auto b = admit(l, "conc", second);
    EXPECT_EQ(b.verdict.status, 503u);
    EXPECT_EQ(b.verdict.reason, "concurrency_limit");
    EXPECT_EQ(header(b.verdict.headers, "Retry-After"), "3");
    expect_decisions(b.decisions, {{"throttling", "rejected", "concurrency_limit"}});
    EXPECT_EQ(l.in_use(key), 1u);
  }
  EXPECT_EQ(l.in_use(key), 0u);
  Limiter::Hold third;
  EXPECT_TRUE(admit(l, "conc", third).verdict.allowed());
  EXPECT_EQ(l.in_use(key), 1u);
}

TEST(Limiter, MovedHoldReleasesOnce) {
  Limiter l;
  const std::string key = "conc|conc0|api";
  std::optional<Limiter::Hold> outer;
  {
    Limiter::Hold h;
    ASSERT_TRUE(admit(l, "conc", h).verdict.allowed());
    outer.emplace(std::move(h));
  }
  EXPECT_EQ(l.in_use(key), 1u);
  Limiter::Hold moved(std::move(*outer));
  outer.reset();
  EXPECT_EQ(l.in_use(key), 1u);
  EXPECT_EQ(admit(l, "conc").verdict.status, 503u);
  { Limiter::Hold sink(std::move(moved)); }
  EXPECT_EQ(l.in_use(key), 0u);
}

// Regression: Hold's move assignment once ran its own destructor and then
// reused the destroyed vector (a double free). Reusing one Hold for the next
// exchange must release the old slots and keep running. Runs in a child
// process so a crash fails this test only.
TEST(Limiter, ReassigningAHoldThatHoldsSlotsReleasesThem) {
  EXPECT_EXIT(
      {
        Limiter l;
        Limiter::Hold hold;
        if (!admit(l, "conc", hold).verdict.allowed()) std::_Exit(2);
        hold = Limiter::Hold{};
        if (l.in_use("conc|conc0|api") != 0) std::_Exit(3);
        if (!admit(l, "conc", hold).verdict.allowed()) std::_Exit(4);
        // admit() into a Hold that still holds a slot of another limit.
        if (!admit(l, "conc2", hold).verdict.allowed()) std::_Exit(5);
        if (l.in_use("conc|conc0|api") != 0) std::_Exit(6);
        std::_Exit(0);
      },
      ::testing::ExitedWithCode(0), "");
}

TEST(Limiter, RefusedConcurrencyReleasesSlotsTakenByEarlierLimits) {
  Limiter l;
  Limiter::Hold a, b, c;
  ASSERT_TRUE(admit(l, "conc2", a, kT0, "", "192.0.2.1").verdict.allowed());
  EXPECT_EQ(l.in_use("conc2|conc0|api"), 1u);
  EXPECT_EQ(l.in_use("conc2|conc1|ip:192.0.2.1"), 1u);
  // Per-API limit 2 has room, per-IP limit 1 does not.
  const auto refused = admit(l, "conc2", b, kT0, "", "192.0.2.1");
  EXPECT_EQ(refused.verdict.status, 503u);
  EXPECT_EQ(header(refused.verdict.headers, "Retry-After"), "1");
  EXPECT_NE(refused.verdict.detail.find("client address"), std::string::npos);
  EXPECT_EQ(l.in_use("conc2|conc0|api"), 1u);
  EXPECT_TRUE(admit(l, "conc2", c, kT0, "", "192.0.2.2").verdict.allowed());
  EXPECT_EQ(l.in_use("conc2|conc0|api"), 2u);
  EXPECT_EQ(l.in_use("conc2|conc1|ip:192.0.2.2"), 1u);
  EXPECT_EQ(l.in_use("unknown"), 0u);
}

// ================================================================ Transform

pv1::Transform transform(const std::string& yaml) {
  pv1::Transform t;
  config::load_yaml_string(yaml, "transform.yaml", t);
  return t;
}

TEST(Transform, RequestHeaderOperationsAreCaseInsensitive) {
  const auto t = transform(R"(
request_headers:
  remove: [x-remove-me]
  rename: {x-old: X-New}
  replace: {ACCEPT: text/plain, X-Absent: never-added}
  add: {X-Added: "yes"}
)");
  auto head = request("/p", {{"Host", "h"},
                             {"X-Old", "1"},
                             {"X-Remove-Me", "a"},
                             {"Accept", "application/json"},
                             {"X-REMOVE-ME", "b"},
                             {"x-old", "2"}});
  transform_request(t, head);
  EXPECT_EQ(fields(head), (Fields{{"Host", "h"},
                                  {"X-New", "1"},
                                  {"Accept", "text/plain"},
                                  {"X-New", "2"},
                                  {"X-Added", "yes"}}));
  EXPECT_EQ(head.target(), "/p");
}

TEST(Transform, AddAppendsEvenWhenPresent) {
  auto head = request("/p", {{"Via", "a"}});
  transform_request(transform("request_headers: {add: {via: b}}"), head);
  EXPECT_EQ(fields(head), (Fields{{"Via", "a"}, {"via", "b"}}));
}

TEST(Transform, RequestQueryOperations) {
  const auto t = transform(R"(
request_query:
  remove: [drop]
  rename: {old: "new name"}
  replace: {rep: "a&b=c"}
  add: {"q s": "ü/?"}
)");
  auto head = request("/p/x?a=1&drop=x&old=2&rep=3&dr%6Fp=y&keep");
  transform_request(t, head);
  EXPECT_EQ(head.target(), "/p/x?a=1&new%20name=2&rep=a%26b%3Dc&keep&q%20s=%C3%BC%2F%3F");
}

TEST(Transform, QueryReplaceGivesAValueAndAddCreatesTheQuery) {
  auto head = request("/p?flag&x=1");
  transform_request(transform("request_query: {replace: {flag: on}}"), head);
  EXPECT_EQ(head.target(), "/p?flag=on&x=1");

  head = request("/p");
  transform_request(transform("request_query: {add: {v: \"1 2\"}}"), head);
  EXPECT_EQ(head.target(), "/p?v=1%202");

  head = request("/p?only=1");
  transform_request(transform("request_query: {remove: [only]}"), head);
  EXPECT_EQ(head.target(), "/p");
}

TEST(Transform, EmptyTransformLeavesTheRequestAlone) {
  auto head = request("/p?b=2&&a=%41", {{"X", "1"}});
  transform_request(pv1::Transform{}, head);
  EXPECT_EQ(head.target(), "/p?b=2&&a=%41");
  EXPECT_EQ(fields(head), (Fields{{"X", "1"}}));
}

TEST(Transform, ResponseHeaderOperations) {
  const auto t = transform(R"(
request_headers: {add: {X-Request-Only: "1"}}
response_headers:
  remove: [server]
  rename: {X-Powered-By: X-Backend}
  replace: {cache-control: no-store}
  add: {X-Gateway: postern}
)");
  tv1::ResponseHead head;
  head.set_status(200);
  for (const auto& [n, v] : Fields{{"Server", "nginx"}, {"x-powered-by", "php"}, {"Cache-Control", "max-age=60"}}) {
    auto* h = head.add_headers();
    h->set_name(n);
    h->set_value(v);
  }
  transform_response(t, head);
  EXPECT_EQ(fields(head), (Fields{{"X-Backend", "php"}, {"Cache-Control", "no-store"}, {"X-Gateway", "postern"}}));
  EXPECT_EQ(head.status(), 200u);
}

TEST(Transform, RemoveQueryParam) {
  std::string value;
  EXPECT_EQ(remove_query_param("/p?a=1&k=v%201&b=2&k=second", "k", &value), "/p?a=1&b=2");
  EXPECT_EQ(value, "v 1");
  value = "untouched";
  EXPECT_EQ(remove_query_param("/p?a=1", "k", &value), "/p?a=1");
  EXPECT_EQ(value, "untouched");
  EXPECT_EQ(remove_query_param("/p", "k"), "/p");
  EXPECT_EQ(remove_query_param("/p?k", "k", &value), "/p");
  EXPECT_EQ(value, "");
  EXPECT_EQ(remove_query_param("/p?K=1", "k"), "/p?K=1");
}

TEST(Transform, RedactTarget) {
  EXPECT_EQ(redact_target("/p?a=1&x-Gateway-APIKey=secret&b=2", "x-Gateway-APIKey"),
            "/p?a=1&x-Gateway-APIKey=REDACTED&b=2");
  EXPECT_EQ(redact_target("/p?token=s1&token=s2", "token"), "/p?token=REDACTED&token=REDACTED");
  EXPECT_EQ(redact_target("/p?a=1", "token"), "/p?a=1");
  EXPECT_EQ(redact_target("/p", "token"), "/p");
}

// ================================================================ Invocation

pv1::LogInvocation frequency(pv1::LogInvocation::Frequency f) {
  pv1::LogInvocation li;
  li.set_frequency(f);
  return li;
}

TEST(Invocation, ShouldLogForEachFrequency) {
  using F = pv1::LogInvocation;
  for (auto f : {F::FREQUENCY_UNSPECIFIED, F::FREQUENCY_ALWAYS}) {
    const auto li = frequency(f);
    EXPECT_TRUE(should_log(li, 200, false));
    EXPECT_TRUE(should_log(li, 404, false));
    EXPECT_TRUE(should_log(li, 200, true));
    EXPECT_TRUE(should_log(li, 0, true));
  }
  const auto on_failure = frequency(F::FREQUENCY_ON_FAILURE);
  EXPECT_FALSE(should_log(on_failure, 200, false));
  EXPECT_FALSE(should_log(on_failure, 304, false));
  EXPECT_FALSE(should_log(on_failure, 399, false));
  EXPECT_TRUE(should_log(on_failure, 400, false));
  EXPECT_TRUE(should_log(on_failure, 503, false));
  EXPECT_TRUE(should_log(on_failure, 200, true));
  EXPECT_TRUE(should_log(on_failure, 0, false));  // no response at all

  const auto on_success = frequency(F::FREQUENCY_ON_SUCCESS);
  EXPECT_TRUE(should_log(on_success, 200, false));
  EXPECT_TRUE(should_log(on_success, 399, false));
  EXPECT_FALSE(should_log(on_success, 400, false));
  EXPECT_FALSE(should_log(on_success, 500, false));
  EXPECT_FALSE(should_log(on_success, 200, true));
  EXPECT_FALSE(should_log(on_success, 0, false));
}

InvocationRecord record() {
  InvocationRecord r;
  r.request_id = "req-9";
  r.api = "orders";
  r.application = "alpha";
  r.client_ip = "192.0.2.1";
  r.method = "POST";
  r.path = "/orders";
  r.enforced_by = "edge";
  r.status = 201;
  r.request_bytes = 12;
  r.response_bytes = 34;
  r.total_ms = 5.5;
  return r;
}

// The string value of `"key":"` found after `from`.
std::string string_member(const std::string& json, const std::string& key, std::size_t from = 0) {
  const std::string open = "\"" + key + "\":\"";
  const auto start = json.find(open, from);
  if (start == std::string::npos) return "(no " + key + ")";
  const auto begin = start + open.size();
  auto end = begin;
  while (end < json.size() && json[end] != '"') end += json[end] == '\\' ? 2 : 1;
  return json.substr(begin, end - begin);
}

TEST(Invocation, FieldsOfARecord) {
  InvocationRecord r = record();
  r.upstream_ms = 4.0;
  r.native_ms = 3.0;
  const std::string f = invocation_fields(r, false);
  EXPECT_TRUE(f.starts_with(R"("request_id":"req-9","api":"orders","application":"alpha","client_ip":"192.0.2.1",)"
                            R"("method":"POST","path":"/orders","enforced_by":"edge","status":201,)"
                            R"("request_bytes":12,"response_bytes":34,)"))
      << f;
  EXPECT_NE(f.find(R"("latency":{"total_ms":5.500,"upstream_ms":4.000,"native_ms":3.000,"tunnel_ms":1.000,)"
                   R"("gateway_ms":1.500})"),
            std::string::npos)
      << f;
  EXPECT_NE(f.find(R"("decisions":[])"), std::string::npos) << f;
  EXPECT_EQ(f.find("error"), std::string::npos);
  EXPECT_EQ(f.find("payload"), std::string::npos);
  EXPECT_NE(f.front(), '{');

  r.error = "upstream_timeout";
  EXPECT_NE(invocation_fields(r, false).find(R"("error":"upstream_timeout")"), std::string::npos);
}

TEST(Invocation, DecisionsArray) {
  InvocationRecord r = record();
  r.decisions = {{"threat_protection", "allowed", "ok"},
                 {"identify", "allowed", "ok"},
                 {"throttling", "rejected", "rate_limited"}};
  const std::string f = invocation_fields(r, false);
  EXPECT_NE(f.find(R"("decisions":[{"policy":"threat_protection","outcome":"allowed","reason":"ok"},)"
                   R"({"policy":"identify","outcome":"allowed","reason":"ok"},)"
                   R"({"policy":"throttling","outcome":"rejected","reason":"rate_limited"}])"),
            std::string::npos)
      << f;
}

TEST(Invocation, CompressedPayloadRoundTrips) {
  std::string original;
  for (int i = 0; i < 200; ++i) original += "{\"line\":" + std::to_string(i) + ",\"bin\":\"\x01\xff\"}\n";
  InvocationRecord r = record();
  r.request_payload = Payload{original, original.size() + 100, true};
  r.response_payload = Payload{"ok", 2, false};
  const std::string f = invocation_fields(r, true);

  const auto req = f.find(R"("request_payload":{)");
  ASSERT_NE(req, std::string::npos) << f;
  EXPECT_NE(f.find(R"("request_payload":{"bytes":)" + std::to_string(original.size() + 100) +
                   R"(,"truncated":true,"encoding":"gzip+base64","data":")"),
            std::string::npos);
  const std::string data = string_member(f, "data", req);
  EXPECT_EQ(data.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="),
            std::string::npos);
  EXPECT_LT(data.size(), original.size());
  EXPECT_EQ(gzip_decompress(base64_decode(data)), original);

  const auto resp = f.find(R"("response_payload":{"bytes":2,"truncated":false,"encoding":"gzip+base64")");
  ASSERT_NE(resp, std::string::npos) << f;
  EXPECT_EQ(gzip_decompress(base64_decode(string_member(f, "data", resp))), "ok");
}

TEST(Invocation, TextPayloadIsJsonEscaped) {
  InvocationRecord r = record();
  r.request_payload = Payload{"say \"hi\"\\\n\ttab\x01 ünï", 22, false};
  const std::string f = invocation_fields(r, false);
  EXPECT_NE(f.find(R"("request_payload":{"bytes":22,"truncated":false,"encoding":"text",)"
                   R"("data":"say \"hi\"\\\n\ttab\u0001 ünï"})"),
            std::string::npos)
      << f;
  EXPECT_EQ(f.find("response_payload"), std::string::npos);
}

TEST(Invocation, BinaryPayloadIsBase64WhenNotCompressed) {
  const std::string bin("\xff\xfe\x00\x80", 4);
  InvocationRecord r = record();
  r.response_payload = Payload{bin, 4, false};
  const std::string f = invocation_fields(r, false);
  const auto at = f.find(R"("response_payload":{"bytes":4,"truncated":false,"encoding":"base64","data":")");
  ASSERT_NE(at, std::string::npos) << f;
  EXPECT_EQ(base64_decode(string_member(f, "data", at)), bin);
}

}  // namespace
}  // namespace postern::policy

namespace postern::policy {
namespace {

TEST(LogPath, NoQueryAndNoPathParameterValues) {
  EXPECT_EQ(log_path("/a/b?x-Gateway-APIKey=secret"), "/a/b");
  EXPECT_EQ(log_path("/a;x-Gateway-APIKey=secret/b"), "/a;x-Gateway-APIKey=REDACTED/b");
  EXPECT_EQ(log_path("/a;k=1;j=2"), "/a;k=REDACTED;j=REDACTED");
  EXPECT_EQ(log_path("/a=b/c;flag"), "/a=b/c;flag");
}

// Finding 12 of the security review: past 100k keys every request scanned
// the whole rate-limit table. Now past kMaxBuckets keys the oldest goes: the
// table stays bounded and a request costs the same however many keys came
// before (no scan).
TEST(SecurityLimiter, AFloodOfKeysStaysBoundedAndIdleOnesAreForgotten) {
  pv1::Snapshot s;
  s.set_version(1);
  config::load_yaml_string(R"(apis:
  - {name: perip, routing: "apigateway://A", policies: {throttling: {rate: [{key: IP, requests: 1, per: 1m}]}}}
)",
                           "p.yaml", *s.mutable_config());
  std::vector<Issue> issues;
  auto cat = Catalog::compile(s, issues);
  ASSERT_TRUE(cat);
  Limiter lim;
  const auto t0 = std::chrono::steady_clock::now();
  Decisions d;
  Identity id;
  auto admit = [&](std::size_t ip, std::chrono::steady_clock::time_point at) {
    Limiter::Hold h;
    return lim.admit(*cat->api("perip"), id, "ip-" + std::to_string(ip), at, h, d);
  };
  for (std::size_t i = 0; i < Limiter::kMaxBuckets + 10; ++i) EXPECT_TRUE(admit(i, t0).allowed());
  EXPECT_EQ(lim.buckets(), Limiter::kMaxBuckets);
  // The newest keys are still counted; the oldest were forgotten.
  EXPECT_FALSE(admit(Limiter::kMaxBuckets + 9, t0).allowed());
  EXPECT_TRUE(admit(0, t0).allowed());
  // After the idle time, everything idle is forgotten at the next request.
  EXPECT_TRUE(admit(7, t0 + Limiter::kIdleForget + std::chrono::seconds(1)).allowed());
  EXPECT_EQ(lim.buckets(), 1u);
}

}  // namespace
}  // namespace postern::policy
