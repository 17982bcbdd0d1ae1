#include "common/policy/catalog.hpp"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cctype>
#include <filesystem>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/config/yaml_proto.hpp"
#include "common/crypto/password.hpp"
#include "common/policy/codec.hpp"
#include "common/policy/jwt.hpp"
#include "support/jwt_keys.hpp"

namespace postern::policy {
namespace {

// ---------------------------------------------------------------- helpers

pv1::Snapshot snapshot(const std::string& yaml) {
  pv1::Snapshot s;
  s.set_version(7);
  config::load_yaml_string(yaml, "policy.yaml", *s.mutable_config());
  return s;
}

std::shared_ptr<const Catalog> compile_ok(const std::string& yaml) {
  std::vector<Issue> issues;
  auto cat = Catalog::compile(snapshot(yaml), issues);
  for (const auto& i : issues) ADD_FAILURE() << i.path << ": " << i.message;
  EXPECT_NE(cat, nullptr);
  return cat;
}

// Compiles a config that must be refused and returns what was wrong with it.
std::vector<Issue> compile_bad(const std::string& yaml) {
  std::vector<Issue> issues;
  auto cat = Catalog::compile(snapshot(yaml), issues);
  EXPECT_EQ(cat, nullptr);
  EXPECT_FALSE(issues.empty());
  return issues;
}

std::string describe(const std::vector<Issue>& issues) {
  std::string out;
  for (const auto& i : issues) out += "\n  " + i.path + ": " + i.message;
  return out.empty() ? " (none)" : out;
}

// An issue at exactly `path` whose message contains `text`.
::testing::AssertionResult has_issue(const std::vector<Issue>& issues, const std::string& path,
                                     const std::string& text) {
  for (const auto& i : issues) {
    if (i.path == path && i.message.find(text) != std::string::npos) return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << "no issue at " << path << " containing '" << text << "'; issues:"
                                       << describe(issues);
}

// A fresh EC P-256 verification key as a JWKS document (EC keygen is quick).
std::string ec_jwks() {
  return postern::testing::jwks({postern::testing::ec_jwk(postern::testing::make_ec_key().get())});
}

// A temporary directory, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/catalog_test_XXXXXX";
    if (mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string write(const std::string& name, const std::string& content) const {
    const std::string full = path_ + "/" + name;
    std::filesystem::create_directories(std::filesystem::path(full).parent_path());
    std::ofstream(full, std::ios::binary) << content;
    return full;
  }

 private:
  std::string path_;
};

const std::string kHashA = sha256_hex("key-a");
const std::string kHashB = sha256_hex("key-b");

// ---------------------------------------------------------------- validation

TEST(Catalog, ValidConfigCompiles) {
  const std::string jwks = ec_jwks();
  pv1::Snapshot s = snapshot(R"(
threat_protection: {max_url_length: {max: 2048}, ip_deny: {cidrs: ["192.0.2.0/24", "2001:db8::/32"]}}
apis:
  - name: orders
    version: "2.0"
    routing: "apigateway://OrdersAlias/rest/orders"
    enforcement: GREEN
    timeout: 2500ms
    policies:
      identify: {identifiers: [API_KEY, JWT], jwt: {jwks_file: jwks.json}}
      throttling:
        rate: [{key: APPLICATION, requests: 10, per: 1s}]
        concurrency: [{max: 5}]
      transform:
        request_headers: {add: {X-Via: postern}, remove: [X-Debug], rename: {X-Old: X-New}, replace: {Accept: "*/*"}}
        request_query: {add: {"a b": "c d"}}
        response_headers: {remove: [Server]}
  - {name: local, base_path: /local, routing: "https://127.0.0.1:8443/base"}
applications:
  - name: alpha
    api_keys: [{sha256: )" + kHashA + R"(}]
    ip_ranges: ["10.0.0.0/8", "::1"]
    hostnames: [alpha.example.com]
    jwt_subjects: [alice]
    basic: [{username: ann, password_hash: ")" + postern::crypto::hash_password("pw", 100000) + R"("}]
    apis: [orders, local]
)");
  s.mutable_config()->mutable_apis(0)->mutable_policies()->mutable_identify()->mutable_jwt()->set_jwks(jwks);
  std::vector<Issue> issues;
  auto cat = Catalog::compile(std::move(s), issues);
  ASSERT_NE(cat, nullptr) << describe(issues);
  EXPECT_TRUE(issues.empty());
  EXPECT_EQ(cat->version(), 7u);
  ASSERT_EQ(cat->apis().size(), 2u);

  const CompiledApi* orders = cat->api("orders");
  ASSERT_NE(orders, nullptr);
  EXPECT_EQ(orders->def, &cat->snapshot().config().apis(0));
  EXPECT_EQ(orders->base_path, "/gateway/orders/2.0");
  EXPECT_TRUE(orders->reverse_invoke);
  EXPECT_EQ(orders->alias, "OrdersAlias");
  EXPECT_EQ(orders->prefix, "/rest/orders");
  EXPECT_TRUE(orders->green);
  EXPECT_EQ(orders->timeout_ms, 2500u);
  ASSERT_NE(orders->jwks, nullptr);
  EXPECT_EQ(orders->jwks->size(), 1u);

  const CompiledApi* local = cat->api("local");
  ASSERT_NE(local, nullptr);
  EXPECT_FALSE(local->reverse_invoke);
  EXPECT_EQ(local->url, "https://127.0.0.1:8443/base");
  EXPECT_FALSE(local->green);
  EXPECT_EQ(local->jwks, nullptr);
  EXPECT_EQ(cat->api("nope"), nullptr);
}

TEST(Catalog, EmptyConfigCompiles) {
  auto cat = compile_ok("");
  ASSERT_NE(cat, nullptr);
  EXPECT_TRUE(cat->apis().empty());
  EXPECT_FALSE(cat->route("/anything"));
}

TEST(Catalog, EarlierIssuesInTheListDoNotRefuseAGoodConfig) {
  std::vector<Issue> issues{{"elsewhere", "not ours"}};
  auto cat = Catalog::compile(snapshot(R"(apis: [{name: a, routing: "apigateway://A"}])"), issues);
  EXPECT_NE(cat, nullptr);
  EXPECT_EQ(issues.size(), 1u);
}

TEST(Catalog, EveryProblemIsReportedAtOnce) {
  const auto issues = compile_bad(R"(apis:
  - {routing: "apigateway://A"}
  - {name: b, routing: "ftp://b"}
applications:
  - {name: x, apis: [nope]}
)");
  EXPECT_TRUE(has_issue(issues, "apis[0].name", "required"));
  EXPECT_TRUE(has_issue(issues, "apis[1].routing", "scheme"));
  EXPECT_TRUE(has_issue(issues, "applications[0].apis[0]", "nope"));
}

TEST(Catalog, MissingApiName) {
  const auto issues = compile_bad(R"(apis: [{base_path: /x, routing: "apigateway://A"}])");
  EXPECT_TRUE(has_issue(issues, "apis[0].name", "required"));
}

TEST(Catalog, DuplicateApiName) {
  const auto issues = compile_bad(R"(apis:
  - {name: orders, base_path: /a, routing: "apigateway://A"}
  - {name: orders, base_path: /b, routing: "apigateway://B"}
)");
  EXPECT_TRUE(has_issue(issues, "apis[1].name", "API 'orders' is defined twice"));
  EXPECT_EQ(issues.size(), 1u) << describe(issues);
}

TEST(Catalog, DuplicateBasePath) {
  auto issues = compile_bad(R"(apis:
  - {name: a, base_path: /shop, routing: "apigateway://A"}
  - {name: b, base_path: /shop, routing: "apigateway://B"}
)");
  EXPECT_TRUE(has_issue(issues, "apis[1].base_path", "'/shop' is already used by API 'a'"));

  // Trailing slashes do not make a different base path.
  issues = compile_bad(R"(apis:
  - {name: a, base_path: /shop, routing: "apigateway://A"}
  - {name: b, base_path: /shop/, routing: "apigateway://B"}
  - {name: c, base_path: "/shop//", routing: "apigateway://C"}
)");
  EXPECT_TRUE(has_issue(issues, "apis[1].base_path", "'/shop' is already used by API 'a'"));
  EXPECT_TRUE(has_issue(issues, "apis[2].base_path", "'/shop' is already used by API 'a'"));

  // A base path written out equal to another API's default one.
  issues = compile_bad(R"(apis:
  - {name: a, version: "1.0", routing: "apigateway://A"}
  - {name: b, base_path: /gateway/a/1.0/, routing: "apigateway://B"}
)");
  EXPECT_TRUE(has_issue(issues, "apis[1].base_path", "'/gateway/a/1.0' is already used by API 'a'"));
}

TEST(Catalog, BasePathMustBeAPath) {
  auto issues = compile_bad(R"(apis: [{name: a, base_path: shop, routing: "apigateway://A"}])");
  EXPECT_TRUE(has_issue(issues, "apis[0].base_path", "must start with '/'"));
  issues = compile_bad(R"(apis: [{name: a, base_path: "/shop?x=1", routing: "apigateway://A"}])");
  EXPECT_TRUE(has_issue(issues, "apis[0].base_path", "no '?' or '#'"));
}

TEST(Catalog, RoutingWithoutSchemeSuggestsApigateway) {
  const auto issues = compile_bad(R"(apis: [{name: a, routing: "RegAlias/rest/x"}])");
  EXPECT_TRUE(has_issue(issues, "apis[0].routing", "has no scheme"));
  EXPECT_TRUE(has_issue(issues, "apis[0].routing", "apigateway://RegAlias/rest/x"));
}

TEST(Catalog, RoutingMissing) {
  const auto issues = compile_bad(R"(apis: [{name: a}])");
  EXPECT_TRUE(has_issue(issues, "apis[0].routing", "required"));
}

TEST(Catalog, RoutingWithUnknownScheme) {
  const auto issues = compile_bad(R"(apis: [{name: a, routing: "ftp://files/x"}])");
  EXPECT_TRUE(has_issue(issues, "apis[0].routing", "scheme must be apigateway, http, https, ws or wss"));
}

TEST(Catalog, ApigatewayRoutingWithoutAlias) {
  auto issues = compile_bad(R"(apis: [{name: a, routing: "apigateway://"}])");
  EXPECT_TRUE(has_issue(issues, "apis[0].routing", "names no alias"));
  issues = compile_bad(R"(apis: [{name: a, routing: "apigateway:///rest/x"}])");
  EXPECT_TRUE(has_issue(issues, "apis[0].routing", "names no alias"));
}

TEST(Catalog, HttpRoutingWithoutHost) {
  const auto issues = compile_bad(R"(apis: [{name: a, routing: "http:///x"}])");
  EXPECT_TRUE(has_issue(issues, "apis[0].routing", "names no host"));
}

TEST(Catalog, GreenEnforcementNeedsApigatewayRouting) {
  const auto issues = compile_bad(R"(apis: [{name: a, routing: "http://svc:8080/", enforcement: GREEN}])");
  EXPECT_TRUE(has_issue(issues, "apis[0].enforcement", "green enforcement needs apigateway:// routing"));
  compile_ok(R"(apis: [{name: a, routing: "apigateway://A/x", enforcement: GREEN}])");
  compile_ok(R"(apis: [{name: a, routing: "http://svc:8080/", enforcement: DMZ}])");
}

TEST(Catalog, BadCidrInThreatProtection) {
  const auto issues = compile_bad(R"(
threat_protection: {ip_deny: {cidrs: ["10.0.0.0/8", "10.0.0.0/33"]}}
apis:
  - name: a
    routing: "apigateway://A"
    policies: {threat_protection: {ip_allow: {cidrs: [not-an-ip]}, ip_deny: {cidrs: ["10.0.0.1/8"]}}}
)");
  EXPECT_TRUE(has_issue(issues, "threat_protection.ip_deny.cidrs[1]", "prefix length must be 0-32"));
  EXPECT_TRUE(has_issue(issues, "apis[0].policies.threat_protection.ip_allow.cidrs[0]", "not an IP address"));
  EXPECT_TRUE(has_issue(issues, "apis[0].policies.threat_protection.ip_deny.cidrs[0]", "did you mean 10.0.0.0/8"));
}

TEST(Catalog, BadCidrInApplicationIpRanges) {
  const auto issues = compile_bad(R"(
applications: [{name: x, ip_ranges: ["10.1.0.0/16", "300.1.1.1"]}]
)");
  EXPECT_TRUE(has_issue(issues, "applications[0].ip_ranges[1]", "not an IP address"));
}

TEST(Catalog, PlainKeyInsteadOfHashIsRefusedWithoutEchoingIt) {
  const std::string key = "sup3r-s3cret-pl41n-k3y";
  const auto issues = compile_bad(R"(applications: [{name: x, api_keys: [{sha256: )" + key + "}]}]");
  EXPECT_TRUE(has_issue(issues, "applications[0].api_keys[0].sha256", "64 hex digits"));
  for (const auto& i : issues) {
    EXPECT_EQ(i.message.find(key), std::string::npos) << i.message;
    EXPECT_EQ(i.path.find(key), std::string::npos) << i.path;
  }
  // 63 hex digits is not a hash either.
  EXPECT_TRUE(has_issue(compile_bad("applications: [{name: x, api_keys: [{sha256: " + kHashA.substr(1) + "}]}]"),
                        "applications[0].api_keys[0].sha256", "64 hex digits"));
}

TEST(Catalog, SameKeyOnTwoApplications) {
  auto issues = compile_bad(R"(applications:
  - {name: first, api_keys: [{sha256: )" + kHashA + R"(}]}
  - {name: second, api_keys: [{sha256: )" + kHashB + R"(}, {sha256: )" + kHashA + R"(}]}
)");
  EXPECT_TRUE(has_issue(issues, "applications[1].api_keys[1].sha256",
                        "the same key is already given to application 'first'"));
  // Hex case does not make a different key.
  std::string upper = kHashA;
  for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  issues = compile_bad(R"(applications:
  - {name: first, api_keys: [{sha256: )" + kHashA + R"(}]}
  - {name: second, api_keys: [{sha256: )" + upper + R"(}]}
)");
  EXPECT_TRUE(has_issue(issues, "applications[1].api_keys[0].sha256", "application 'first'"));
}

TEST(Catalog, DuplicateApplicationName) {
  const auto issues = compile_bad(R"(applications: [{name: x}, {name: x}])");
  EXPECT_TRUE(has_issue(issues, "applications[1].name", "application 'x' is defined twice"));
}

TEST(Catalog, UnresolvedKeyFile) {
  const auto issues = compile_bad(R"(applications: [{name: x, api_keys: [{key_file: /run/secrets/x}]}])");
  EXPECT_TRUE(has_issue(issues, "applications[0].api_keys[0].key_file", "was not resolved to a hash"));
}

TEST(Catalog, JwtIdentifierNeedsJwks) {
  auto issues = compile_bad(R"(apis:
  - {name: a, routing: "apigateway://A", policies: {identify: {identifiers: [JWT]}}}
)");
  EXPECT_TRUE(has_issue(issues, "apis[0].policies.identify.jwt", "JWT identification needs jwt.jwks_file"));
  issues = compile_bad(R"(apis:
  - {name: a, routing: "apigateway://A", policies: {identify: {identifiers: [JWT], jwt: {jwks_file: k.json}}}}
)");
  EXPECT_TRUE(has_issue(issues, "apis[0].policies.identify.jwt", "jwks_file was not resolved"));
}

TEST(Catalog, BadJwks) {
  auto issues = compile_bad(R"(apis:
  - {name: a, routing: "apigateway://A", policies: {identify: {identifiers: [JWT], jwt: {jwks: "{\"keys\":[]}"}}}}
)");
  EXPECT_TRUE(has_issue(issues, "apis[0].policies.identify.jwt.jwks_file", "no usable key"));
  issues = compile_bad(R"(apis:
  - {name: a, routing: "apigateway://A", policies: {identify: {identifiers: [JWT], jwt: {jwks: "not json"}}}}
)");
  EXPECT_TRUE(has_issue(issues, "apis[0].policies.identify.jwt.jwks_file", "not a valid JSON object"));
}

TEST(Catalog, IdentifyIdentifierList) {
  auto issues = compile_bad(R"(apis: [{name: a, routing: "apigateway://A", policies: {identify: {}}}])");
  EXPECT_TRUE(has_issue(issues, "apis[0].policies.identify.identifiers", "at least one"));
  issues = compile_bad(R"(apis:
  - {name: a, routing: "apigateway://A", policies: {identify: {identifiers: [API_KEY, IP, API_KEY]}}}
)");
  EXPECT_TRUE(has_issue(issues, "apis[0].policies.identify.identifiers[2]", "listed twice"));
  issues = compile_bad(R"(apis:
  - {name: a, routing: "apigateway://A", policies: {identify: {identifiers: [API_KEY], api_key_header: "x key"}}}
)");
  EXPECT_TRUE(has_issue(issues, "apis[0].policies.identify.api_key_header", "not a valid name"));
}

TEST(Catalog, ApplicationReferencesUnknownApi) {
  const auto issues = compile_bad(R"(
apis: [{name: orders, routing: "apigateway://A"}]
applications: [{name: x, apis: [orders, billing]}]
)");
  EXPECT_TRUE(has_issue(issues, "applications[0].apis[1]", "no API named 'billing'"));
  EXPECT_EQ(issues.size(), 1u) << describe(issues);
}

TEST(Catalog, RateWithZeroRequests) {
  const auto issues = compile_bad(R"(apis:
  - {name: a, routing: "apigateway://A", policies: {throttling: {rate: [{requests: 5}, {requests: 0, per: 1s}]}}}
)");
  EXPECT_TRUE(has_issue(issues, "apis[0].policies.throttling.rate[1].requests", "must be > 0"));
  EXPECT_EQ(issues.size(), 1u) << describe(issues);
}

TEST(Catalog, ConcurrencyWithZeroMax) {
  const auto issues = compile_bad(R"(apis:
  - {name: a, routing: "apigateway://A", policies: {throttling: {concurrency: [{max: 0}]}}}
)");
  EXPECT_TRUE(has_issue(issues, "apis[0].policies.throttling.concurrency[0].max", "must be > 0"));
}

TEST(Catalog, InvalidHeaderNameInTransform) {
  const auto issues = compile_bad(R"yaml(apis:
  - name: a
    routing: "apigateway://A"
    policies:
      transform:
        request_headers: {add: {"bad name": v}, rename: {X-Old: "X:New"}}
        response_headers: {remove: ["Set(Cookie)"], replace: {X-Ctl: "a\u0001b"}}
        request_query: {add: {"q s": "spaces are fine in a query name"}}
)yaml");
  EXPECT_TRUE(has_issue(issues, "apis[0].policies.transform.request_headers.add[bad name]",
                        "'bad name' is not a valid header name"));
  EXPECT_TRUE(has_issue(issues, "apis[0].policies.transform.request_headers.rename[X-Old]",
                        "'X:New' is not a valid header name"));
  EXPECT_TRUE(has_issue(issues, "apis[0].policies.transform.response_headers.remove[0]",
                        "'Set(Cookie)' is not a valid header name"));
  EXPECT_TRUE(has_issue(issues, "apis[0].policies.transform.response_headers.replace[X-Ctl]", "control character"));
  EXPECT_EQ(issues.size(), 4u) << describe(issues);
}

// ---------------------------------------------------------------- routing

TEST(Catalog, RouteLongestPrefixOnWholeSegments) {
  auto cat = compile_ok(R"(apis:
  - {name: a, base_path: /api, routing: "apigateway://A/"}
  - {name: b, base_path: /api/v2/, routing: "apigateway://B/x/"}
  - {name: direct, base_path: /direct, routing: "http://127.0.0.1:8080/base"}
)");
  ASSERT_NE(cat, nullptr);
  auto m = cat->route("/api/v2/items?q=1");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->api->name, "b");
  EXPECT_EQ(m->target, "/x/items?q=1");
  EXPECT_EQ(cat->route("/api/v2")->target, "/x");
  EXPECT_EQ(cat->route("/api/v2/")->target, "/x/");

  m = cat->route("/api/v20/items");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->api->name, "a");
  EXPECT_EQ(m->target, "/v20/items");
  EXPECT_EQ(cat->route("/api")->target, "/");
  EXPECT_EQ(cat->route("/api?x=1")->target, "/?x=1");

  EXPECT_EQ(cat->route("/direct/p")->api->name, "direct");
  EXPECT_FALSE(cat->route("/apix"));
  EXPECT_FALSE(cat->route("/"));
  EXPECT_FALSE(cat->route("/other/api"));
}

TEST(Catalog, RootBasePathIsTheFallback) {
  auto cat = compile_ok(R"(apis:
  - {name: root, base_path: /, routing: "apigateway://R/native"}
  - {name: a, base_path: /api, routing: "apigateway://A"}
)");
  ASSERT_NE(cat, nullptr);
  EXPECT_EQ(cat->route("/api/x")->api->name, "a");
  auto m = cat->route("/apix?y=2");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->api->name, "root");
  EXPECT_EQ(m->target, "/native/apix?y=2");
  EXPECT_EQ(cat->route("/")->target, "/native/");
}

TEST(Catalog, DefaultBasePath) {
  auto cat = compile_ok(R"(apis:
  - {name: EmployeeAPI, version: "2.1", routing: "apigateway://RegPortAlias/rest/EMP1"}
  - {name: Billing, routing: "apigateway://Bill"}
)");
  ASSERT_NE(cat, nullptr);
  EXPECT_EQ(cat->api("EmployeeAPI")->base_path, "/gateway/EmployeeAPI/2.1");
  EXPECT_EQ(cat->api("Billing")->base_path, "/gateway/Billing/1.0");
  auto m = cat->route("/gateway/EmployeeAPI/2.1/employeeDetails/findEmp/15?x=1");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->api->name, "EmployeeAPI");
  EXPECT_EQ(m->api->alias, "RegPortAlias");
  EXPECT_EQ(m->target, "/rest/EMP1/employeeDetails/findEmp/15?x=1");
  EXPECT_EQ(cat->route("/gateway/Billing/1.0/inv")->target, "/inv");
  EXPECT_FALSE(cat->route("/gateway/EmployeeAPI/2.10/x"));

  pv1::Api api;
  api.set_name("x");
  EXPECT_EQ(default_base_path(api), "/gateway/x/1.0");
  api.set_version("3");
  EXPECT_EQ(default_base_path(api), "/gateway/x/3");
}

// ---------------------------------------------------------------- threats

TEST(Catalog, ApiThreatRulesOverrideGlobalOnesFieldByField) {
  auto cat = compile_ok(R"(
threat_protection:
  max_url_length: {max: 100}
  max_header_count: {max: 50, mode: REPORT}
  ip_deny: {cidrs: ["10.0.0.0/8"]}
apis:
  - name: strict
    base_path: /strict
    routing: "apigateway://A"
    policies:
      threat_protection:
        max_url_length: {max: 10, mode: REPORT}
        max_body_bytes: {max: 1000}
        ip_deny: {cidrs: ["192.168.0.0/16"]}
        ip_allow: {cidrs: ["192.168.0.0/16", "10.0.0.0/8"], mode: REPORT}
  - {name: plain, base_path: /plain, routing: "apigateway://B"}
  - name: off
    base_path: /off
    routing: "apigateway://C"
    policies: {threat_protection: {max_url_length: {max: 0}}}
)");
  ASSERT_NE(cat, nullptr);
  const ThreatRules& g = cat->threats();
  EXPECT_EQ(g.url_length.max, 100u);
  EXPECT_FALSE(g.url_length.report_only);
  EXPECT_EQ(g.header_count.max, 50u);
  EXPECT_TRUE(g.header_count.report_only);
  EXPECT_EQ(g.body_bytes.max, 0u);
  EXPECT_TRUE(g.deny.on);
  EXPECT_TRUE(g.deny.ranges.contains("10.1.2.3"));
  EXPECT_FALSE(g.allow.on);

  const ThreatRules& s = cat->api("strict")->threats;
  EXPECT_EQ(s.url_length.max, 10u);
  EXPECT_TRUE(s.url_length.report_only);
  EXPECT_EQ(s.header_count.max, 50u);  // inherited
  EXPECT_TRUE(s.header_count.report_only);
  EXPECT_EQ(s.body_bytes.max, 1000u);
  EXPECT_FALSE(s.body_bytes.report_only);
  EXPECT_TRUE(s.deny.on);
  EXPECT_TRUE(s.deny.ranges.contains("192.168.4.4"));
  EXPECT_FALSE(s.deny.ranges.contains("10.1.2.3"));  // replaced, not merged
  EXPECT_TRUE(s.allow.on);
  EXPECT_TRUE(s.allow.report_only);
  EXPECT_TRUE(s.allow.ranges.contains("10.9.9.9"));

  const ThreatRules& p = cat->api("plain")->threats;
  EXPECT_EQ(p.url_length.max, 100u);
  EXPECT_EQ(p.header_count.max, 50u);
  EXPECT_TRUE(p.deny.ranges.contains("10.1.2.3"));
  EXPECT_FALSE(p.allow.on);

  // A rule set to 0 on the API switches the global one off for it.
  EXPECT_EQ(cat->api("off")->threats.url_length.max, 0u);
  EXPECT_EQ(cat->api("off")->threats.header_count.max, 50u);
}

// ---------------------------------------------------------------- applications

TEST(Catalog, ApplicationLookups) {
  std::string upper_b = kHashB;
  for (auto& c : upper_b) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  auto cat = compile_ok(R"(
apis: [{name: orders, routing: "apigateway://A"}, {name: billing, routing: "apigateway://B"}]
applications:
  - name: alpha
    api_keys: [{sha256: )" + kHashA + R"(}]
    ip_ranges: ["10.1.0.0/16", "2001:db8::/32"]
    hostnames: [Alpha.Example.com]
    jwt_subjects: [alice]
    basic: [{username: ann, password_hash: ")" + postern::crypto::hash_password("pw-ann", 100000) + R"("}]
    apis: [orders]
  - name: bravo
    api_keys: [{sha256: )" + upper_b + R"(}]
    ip_ranges: ["10.2.0.0/16"]
    hostnames: [bravo.example.com]
    basic: [{username: bob, password_hash: ")" + postern::crypto::hash_password("pw-bob", 100000) + R"("}]
    apis: [orders, billing]
)");
  ASSERT_NE(cat, nullptr);
  const auto* alpha = cat->application("alpha");
  const auto* bravo = cat->application("bravo");
  ASSERT_NE(alpha, nullptr);
  ASSERT_NE(bravo, nullptr);
  EXPECT_EQ(alpha->name(), "alpha");
  EXPECT_EQ(cat->application("charlie"), nullptr);

  EXPECT_EQ(cat->by_key_hash(kHashA), alpha);
  EXPECT_EQ(cat->by_key_hash(sha256_hex("key-b")), bravo);  // stored lower-case
  EXPECT_EQ(cat->by_key_hash(sha256_hex("key-c")), nullptr);
  EXPECT_EQ(cat->by_key_hash("key-a"), nullptr);

  EXPECT_EQ(cat->by_ip("10.1.200.3"), alpha);
  EXPECT_EQ(cat->by_ip("::ffff:10.1.0.1"), alpha);
  EXPECT_EQ(cat->by_ip("2001:db8::7"), alpha);
  EXPECT_EQ(cat->by_ip("10.2.0.1"), bravo);
  EXPECT_EQ(cat->by_ip("10.3.0.1"), nullptr);
  EXPECT_EQ(cat->by_ip(""), nullptr);

  EXPECT_EQ(cat->by_host("alpha.example.com"), alpha);
  EXPECT_EQ(cat->by_host("ALPHA.EXAMPLE.COM"), alpha);
  EXPECT_EQ(cat->by_host("Bravo.Example.Com"), bravo);
  EXPECT_EQ(cat->by_host("example.com"), nullptr);

  EXPECT_EQ(cat->by_jwt_subject("alice"), alpha);
  EXPECT_EQ(cat->by_jwt_subject("Alice"), nullptr);

  // Basic: nothing is known until the slow check ran, then it is cached.
  auto basic = [&](std::string_view user, std::string_view pw) -> std::pair<Catalog::BasicResult, const pv1::Application*> {
    const pv1::Application* app = nullptr;
    auto r = cat->cached_basic(user, pw, app);
    if (r != Catalog::BasicResult::unchecked) return {r, app};
    cat->verify_basic(user, pw);
    r = cat->cached_basic(user, pw, app);
    return {r, app};
  };
  const pv1::Application* none = nullptr;
  const pv1::Application* app = nullptr;
  EXPECT_EQ(cat->cached_basic("ann", "pw-ann", app), Catalog::BasicResult::unchecked);
  EXPECT_EQ(basic("ann", "pw-ann"), std::make_pair(Catalog::BasicResult::match, alpha));
  EXPECT_EQ(cat->cached_basic("ann", "pw-ann", app), Catalog::BasicResult::match);
  EXPECT_EQ(basic("bob", "pw-bob"), std::make_pair(Catalog::BasicResult::match, bravo));
  EXPECT_EQ(basic("ann", "pw-bob"), std::make_pair(Catalog::BasicResult::no_match, none));
  EXPECT_EQ(basic("bob", "pw-ann"), std::make_pair(Catalog::BasicResult::no_match, none));
  EXPECT_EQ(cat->cached_basic("carl", "pw-ann", app), Catalog::BasicResult::no_match);  // no such user: no hash
  EXPECT_EQ(basic("ann", ""), std::make_pair(Catalog::BasicResult::no_match, none));

  EXPECT_TRUE(Catalog::allows(*alpha, "orders"));
  EXPECT_FALSE(Catalog::allows(*alpha, "billing"));
  EXPECT_TRUE(Catalog::allows(*bravo, "billing"));
}

TEST(Catalog, BasicCredentialChecks) {
  const auto issues = compile_bad(R"(applications:
  - name: x
    basic:
      - {username: "a:b", password_hash: ")" + postern::crypto::hash_password("pw", 100000) + R"("}
      - {username: c, password_hash: )" + kHashA + R"(}
      - {username: d, password_hash: "$pbkdf2-sha256$i=1000$c2FsdHNhbHQ$AAAA"}
)");
  EXPECT_TRUE(has_issue(issues, "applications[0].basic[0].username", "':'"));
  // An unsalted SHA-256 (what the field used to hold) is refused.
  EXPECT_TRUE(has_issue(issues, "applications[0].basic[1].password_hash", "hash-password"));
  EXPECT_TRUE(has_issue(issues, "applications[0].basic[2].password_hash", "iteration count 1000"));
}

// ---------------------------------------------------------------- overlaps

// The quick start once shipped an open API and a keyed one on the same
// native prefix: the key protected nothing.
TEST(Catalog, NestedNativePrefixesWithDifferentPoliciesAreRefused) {
  auto issues = compile_bad(R"(apis:
  - {name: open, routing: "apigateway://demo/"}
  - {name: keyed, routing: "apigateway://demo/", policies: {identify: {identifiers: [API_KEY]}}}
)");
  EXPECT_TRUE(has_issue(issues, "apis[1].routing", "APIs 'open' and 'keyed' both reach native prefix '/'"))
      << describe(issues);
  issues = compile_bad(R"(apis:
  - {name: chat, type: websocket, routing: "apigateway://demo/api/demo/"}
  - name: chat-secured
    type: websocket
    routing: "apigateway://demo/api/demo/secured/"
    policies: {identify: {identifiers: [API_KEY]}}
)");
  EXPECT_TRUE(has_issue(issues, "apis[1].routing", "native prefix '/api/demo/secured'")) << describe(issues);
  // The inner one first: still found.
  issues = compile_bad(R"(apis:
  - {name: files-priv, routing: "apigateway://files/priv", policies: {identify: {identifiers: [API_KEY]}}}
  - {name: files, routing: "apigateway://files/"}
)");
  EXPECT_TRUE(has_issue(issues, "apis[1].routing", "API 'files-priv'")) << describe(issues);
  // The same upstream through ws:// and http://.
  issues = compile_bad(R"(apis:
  - {name: a, routing: "http://Up.example:80/"}
  - {name: b, type: websocket, routing: "ws://up.example:80/x", policies: {websocket: {idle_timeout: 5s}}}
)");
  EXPECT_TRUE(has_issue(issues, "apis[1].routing", "upstream 'http://up.example:80'")) << describe(issues);
}

TEST(Catalog, SeparatePrefixesSamePoliciesOrAllowOverlapAreAccepted) {
  // Siblings, and prefixes that only share characters ("/api" vs "/apix").
  compile_ok(R"(apis:
  - {name: open, routing: "apigateway://demo/open"}
  - {name: keyed, routing: "apigateway://demo/keyed", policies: {identify: {identifiers: [API_KEY]}}}
  - {name: k2, routing: "apigateway://demo/openx", policies: {identify: {identifiers: [API_KEY]}}}
  - {name: other-alias, routing: "apigateway://other/"}
)");
  // Nested, but the same policies: nothing to bypass.
  compile_ok(R"(apis:
  - {name: v1, routing: "apigateway://demo/"}
  - {name: v2, routing: "apigateway://demo/v2"}
)");
  // Nested on purpose: a warning, not an error.
  auto cat = compile_ok(R"(apis:
  - {name: open, routing: "apigateway://demo/", allow_overlap: true}
  - {name: keyed, routing: "apigateway://demo/keyed", policies: {identify: {identifiers: [API_KEY]}}}
)");
  ASSERT_EQ(cat->warnings().size(), 1u);
  EXPECT_NE(cat->warnings()[0].find("apis[1].routing: "), std::string::npos) << cat->warnings()[0];
}

// ---------------------------------------------------------------- resolve_files

TEST(Catalog, ResolveFilesHashesKeyFilesAndInlinesJwks) {
  TempDir dir;
  dir.write("secrets/alpha.key", "key-a\n");
  const std::string absolute = dir.write("bravo.key", "key-b\r\n\n");
  const std::string jwks = ec_jwks();
  dir.write("jwks/keys.json", jwks);

  pv1::PolicyConfig cfg;
  config::load_yaml_string(R"(
apis:
  - {name: plain, base_path: /plain, routing: "apigateway://P"}
  - name: orders
    routing: "apigateway://A"
    policies: {identify: {identifiers: [API_KEY, JWT], jwt: {jwks_file: jwks/keys.json}}}
applications:
  - {name: alpha, api_keys: [{key_file: secrets/alpha.key}, {sha256: )" + sha256_hex("other") + R"(}], apis: [orders]}
  - {name: bravo, api_keys: [{key_file: )" + absolute + R"(}], apis: [orders]}
)",
                           "policy.yaml", cfg);
  std::vector<Issue> issues;
  resolve_files(cfg, dir.path(), issues);
  EXPECT_TRUE(issues.empty()) << describe(issues);

  const auto& a = cfg.applications(0).api_keys(0);
  EXPECT_FALSE(a.has_key_file());
  EXPECT_EQ(a.sha256(), kHashA);  // trailing newline stripped
  EXPECT_EQ(cfg.applications(0).api_keys(1).sha256(), sha256_hex("other"));
  EXPECT_EQ(cfg.applications(1).api_keys(0).sha256(), kHashB);
  EXPECT_EQ(cfg.apis(1).policies().identify().jwt().jwks(), jwks);
  // Resolving must not make absent policies appear.
  EXPECT_FALSE(cfg.apis(0).has_policies());

  pv1::Snapshot s;
  *s.mutable_config() = cfg;
  auto cat = Catalog::compile(std::move(s), issues);
  ASSERT_NE(cat, nullptr) << describe(issues);
  EXPECT_EQ(cat->by_key_hash(sha256_hex("key-a"))->name(), "alpha");
  EXPECT_EQ(cat->by_key_hash(sha256_hex("key-b"))->name(), "bravo");
  ASSERT_NE(cat->api("orders")->jwks, nullptr);
}

TEST(Catalog, ResolveFilesReportsMissingAndEmptyFiles) {
  TempDir dir;
  dir.write("empty.key", "\n");
  pv1::PolicyConfig cfg;
  config::load_yaml_string(R"(
apis:
  - name: orders
    routing: "apigateway://A"
    policies: {identify: {identifiers: [JWT], jwt: {jwks_file: nowhere.json}}}
applications:
  - {name: alpha, api_keys: [{key_file: missing.key}, {key_file: empty.key}]}
)",
                           "policy.yaml", cfg);
  std::vector<Issue> issues;
  resolve_files(cfg, dir.path(), issues);
  EXPECT_TRUE(has_issue(issues, "applications[0].api_keys[0].key_file",
                        "cannot read '" + dir.path() + "/missing.key': No such file or directory"));
  EXPECT_TRUE(has_issue(issues, "applications[0].api_keys[1].key_file", "is empty"));
  EXPECT_TRUE(has_issue(issues, "apis[0].policies.identify.jwt.jwks_file", dir.path() + "/nowhere.json"));
  EXPECT_EQ(issues.size(), 3u) << describe(issues);
  // Left unresolved, so compile refuses the config too.
  EXPECT_TRUE(cfg.applications(0).api_keys(0).has_key_file());
}

}  // namespace
}  // namespace postern::policy
