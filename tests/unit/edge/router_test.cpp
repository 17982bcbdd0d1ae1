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

TEST(Router, DefaultBasePathAndAliasPrefix) {
  auto c = parse(R"(apis:
  - {name: EmployeeAPI, version: "1.0", routing: "apigateway://RegPortAlias/rest/EMP1"}
)");
  Router r(c.apis(), "");
  auto route = r.route("/gateway/EmployeeAPI/1.0/employeeDetails/findEmp/15?x=1");
  ASSERT_TRUE(route);
  EXPECT_EQ(route->kind, Route::Kind::reverse_invoke);
  EXPECT_EQ(route->alias, "RegPortAlias");
  EXPECT_EQ(route->api, "EmployeeAPI");
  EXPECT_EQ(route->target, "/rest/EMP1/employeeDetails/findEmp/15?x=1");
  EXPECT_EQ(r.route("/gateway/EmployeeAPI/1.0")->target, "/rest/EMP1");
  EXPECT_FALSE(r.route("/gateway/EmployeeAPI/1.01/x"));
  EXPECT_FALSE(r.route("/other"));
}

TEST(Router, LongestPrefixWins) {
  auto c = parse(R"(apis:
  - {name: a, base_path: /api, routing: "apigateway://A/"}
  - {name: b, base_path: /api/v2/, routing: "apigateway://B/x"}
)");
  Router r(c.apis(), "");
  EXPECT_EQ(r.route("/api/v2/items")->alias, "B");
  EXPECT_EQ(r.route("/api/v2/items")->target, "/x/items");
  EXPECT_EQ(r.route("/api/v3")->alias, "A");
  EXPECT_EQ(r.route("/api")->target, "/");
}

TEST(Router, DefaultAliasTakesTheRest) {
  auto c = parse(R"(apis: [{name: a, base_path: /a, routing: "http://127.0.0.1:9/"}])");
  Router r(c.apis(), "inner");
  auto route = r.route("/elsewhere?q");
  ASSERT_TRUE(route);
  EXPECT_EQ(route->alias, "inner");
  EXPECT_EQ(route->target, "/elsewhere?q");
  EXPECT_EQ(r.route("/a/b")->kind, Route::Kind::direct);
  EXPECT_EQ(r.direct_upstreams().size(), 1u);
}

TEST(Router, RejectsBadRoutingAndDuplicates) {
  EXPECT_THROW(
      {
        try {
          Router(parse(R"(apis: [{name: a, routing: "RegPortAlias/x"}])").apis(), "");
        } catch (const std::invalid_argument& e) {
          EXPECT_NE(std::string(e.what()).find("apis[0].routing"), std::string::npos);
          throw;
        }
      },
      std::invalid_argument);
  EXPECT_THROW(Router(parse(R"(apis:
  - {name: a, base_path: /x, routing: "apigateway://A/"}
  - {name: b, base_path: /x/, routing: "apigateway://B/"}
)")
                          .apis(),
                      ""),
               std::invalid_argument);
}

}  // namespace
}  // namespace postern::edge
