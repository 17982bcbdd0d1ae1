// Every hop writes one record per exchange ("msg":"request"), with the same
// field names at the edge and the connector, found by the request id.

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "support/http.hpp"
#include "support/process.hpp"
#include "support/system.hpp"

namespace postern::testing {
namespace {

namespace json = boost::json;
using namespace std::chrono_literals;

std::vector<json::object> records(const std::string& log, const std::string& request_id) {
  std::vector<json::object> out;
  std::istringstream in(log);
  std::string line;
  while (std::getline(in, line)) {
    if (line.find("\"msg\":\"request\"") == std::string::npos || line.find(request_id) == std::string::npos) continue;
    out.push_back(json::parse(line).as_object());
  }
  return out;
}

std::set<std::string> keys(const json::object& o) {
  std::set<std::string> k;
  for (const auto& [name, _] : o) k.emplace(name);
  return k;
}

TEST(Logs, OneRecordPerExchangePerHopWithTheSameFieldNames) {
  System sys;
  sys.start_all();
  const std::string id = "log-test-7f3a";
  auto r = curl({"-H", "X-Request-Id: " + id, sys.edge_url("/gateway/demo/1.0/headers?q=secret")});
  ASSERT_EQ(r.status, 200);
  auto& connector = *sys.connectors[0];
  sys.edge->wait_for_log("\"request_id\":\"" + id + "\"", 5s);
  sys.broker->wait_for_log("\"msg\":\"request\".*\"request_id\":\"" + id + "\"", 5s);
  connector.wait_for_log("\"msg\":\"request\".*\"request_id\":\"" + id + "\"", 5s);

  const auto edge = records(sys.edge->log(), id);
  const auto broker = records(sys.broker->log(), id);
  const auto conn = records(connector.log(), id);
  ASSERT_EQ(edge.size(), 1u) << sys.edge->log_tail();
  ASSERT_EQ(broker.size(), 1u) << sys.broker->log_tail();
  ASSERT_EQ(conn.size(), 1u) << connector.log_tail();

  // The same names for the same facts; the connector adds the alias.
  auto ek = keys(edge[0]), ck = keys(conn[0]);
  ck.erase("alias");
  EXPECT_EQ(ek, ck);
  for (const char* field : {"request_id", "client", "method", "path", "api", "status", "duration_ms"}) {
    EXPECT_TRUE(edge[0].contains(field)) << field;
  }
  for (const char* field : {"request_id", "client", "method", "api", "status"}) {
    EXPECT_EQ(json::serialize(edge[0].at(field)), json::serialize(conn[0].at(field))) << field;
  }
  // The path each hop handled, without the query (it may hold secrets):
  // the public one at the edge, the native one at the connector.
  EXPECT_EQ(edge[0].at("path").as_string(), "/gateway/demo/1.0/headers");
  EXPECT_EQ(conn[0].at("path").as_string(), "/headers");
  EXPECT_EQ(conn[0].at("alias").as_string(), "demo");
  // The broker: what it knows of the exchange.
  EXPECT_EQ(broker[0].at("api").as_string(), "demo");
  EXPECT_EQ(broker[0].at("alias").as_string(), "demo");
  EXPECT_EQ(broker[0].at("connector").as_string(), "connector-1");
  EXPECT_EQ(broker[0].at("result").as_string(), "ok");
  EXPECT_TRUE(broker[0].contains("duration_ms"));
}

}  // namespace
}  // namespace postern::testing
