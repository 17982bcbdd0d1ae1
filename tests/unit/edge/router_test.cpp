#include "edge/router.hpp"

#include <gtest/gtest.h>

#include "common/config/yaml_proto.hpp"

namespace postern::edge {
namespace {

config::v1::EdgeConfig parse(const std::string& yaml) {
  config::v1::EdgeConfig c;
  config::load_yaml_string(yaml, "edge.yaml", c);
  return c;
}

std::shared_ptr<const policy::Catalog> snapshot(const std::string& yaml) {
  policy::v1::Snapshot s;
  s.set_version(1);
  config::load_yaml_string(yaml, "policy.yaml", *s.mutable_config());
  std::vector<policy::Issue> issues;
  auto cat = policy::Catalog::compile(std::move(s), issues);
  EXPECT_TRUE(issues.empty()) << issues.front().path << ": " << issues.front().message;
  return cat;
}

TEST(Router, SnapshotApiWithDefaultBasePathAndAliasPrefix) {
  auto cat = snapshot(R"(apis:
  - {name: EmployeeAPI, version: "1.0", routing: "apigateway://RegPortAlias/rest/EMP1"}
)");
  Router r(parse("").apis(), "");
  auto route = r.route(cat.get(), "/gateway/EmployeeAPI/1.0/employeeDetails/findEmp/15?x=1");
  ASSERT_TRUE(route);
  EXPECT_EQ(route->kind, Route::Kind::reverse_invoke);
  EXPECT_EQ(route->alias, "RegPortAlias");
  EXPECT_EQ(route->api, "EmployeeAPI");
  EXPECT_EQ(route->target, "/rest/EMP1/employeeDetails/findEmp/15?x=1");
  EXPECT_EQ(route->policy_api, cat->api("EmployeeAPI"));
  EXPECT_EQ(r.route(cat.get(), "/gateway/EmployeeAPI/1.0")->target, "/rest/EMP1");
  EXPECT_FALSE(r.route(cat.get(), "/gateway/EmployeeAPI/1.01/x"));
  EXPECT_FALSE(r.route(cat.get(), "/other"));
  EXPECT_FALSE(r.route(nullptr, "/gateway/EmployeeAPI/1.0/x"));
}

TEST(Router, LongestPrefixWins) {
  auto cat = snapshot(R"(apis:
  - {name: a, base_path: /api, routing: "apigateway://A/"}
  - {name: b, base_path: /api/v2/, routing: "apigateway://B/x"}
)");
  Router r(parse("").apis(), "");
  EXPECT_EQ(r.route(cat.get(), "/api/v2/items")->alias, "B");
  EXPECT_EQ(r.route(cat.get(), "/api/v2/items")->target, "/x/items");
  EXPECT_EQ(r.route(cat.get(), "/api/v3")->alias, "A");
  EXPECT_EQ(r.route(cat.get(), "/api")->target, "/");
}

TEST(Router, LocalApisAreAFallbackThenTheDefaultAlias) {
  auto cat = snapshot(R"(apis: [{name: s, base_path: /a/s, routing: "apigateway://S/"}])");
  Router r(parse(R"(apis: [{name: a, base_path: /a, routing: "http://127.0.0.1:9/"}])").apis(), "inner");
  auto snap = r.route(cat.get(), "/a/s/x");
  ASSERT_TRUE(snap);
  EXPECT_EQ(snap->alias, "S");
  auto local = r.route(cat.get(), "/a/b");
  ASSERT_TRUE(local);
  EXPECT_EQ(local->kind, Route::Kind::direct);
  EXPECT_EQ(local->url, "http://127.0.0.1:9/");
  EXPECT_EQ(local->policy_api, nullptr);
  auto rest = r.route(cat.get(), "/elsewhere?q");
  ASSERT_TRUE(rest);
  EXPECT_EQ(rest->alias, "inner");
  EXPECT_EQ(rest->target, "/elsewhere?q");
}

TEST(Router, LocalListHoldsDmzLocalApisOnly) {
  try {
    Router(parse(R"(apis: [{name: a, routing: "apigateway://A/x"}])").apis(), "");
    FAIL() << "accepted a reverse-invoke API in the edge config";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("apis[0].routing"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("policy file"), std::string::npos) << e.what();
  }
  EXPECT_THROW(Router(parse(R"(apis:
  - {name: a, base_path: /x, routing: "http://a/"}
  - {name: b, base_path: /x/, routing: "http://b/"}
)")
                          .apis(),
                      ""),
               std::invalid_argument);
}

}  // namespace
}  // namespace postern::edge
