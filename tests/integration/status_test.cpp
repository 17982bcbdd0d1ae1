// The admin port's /status on the broker and the edge: JSON for scripts
// (Accept: application/json), an HTML page for a person, checked in
// headless Chromium with a screenshot in the test's output directory.

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <filesystem>
#include <fstream>
#include <string>

#include "support/files.hpp"
#include "support/http.hpp"
#include "support/process.hpp"
#include "support/system.hpp"
#include "support/ws.hpp"

namespace postern::testing {
namespace {

namespace json = boost::json;
using namespace std::chrono_literals;

json::object status(std::uint16_t admin_port) {
  const auto r = curl({"-H", "Accept: application/json", "http://127.0.0.1:" + std::to_string(admin_port) + "/status"});
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("content-type"), "application/json");
  return json::parse(r.body).as_object();
}

std::uint64_t num(const json::object& o, const char* key) { return o.at(key).to_number<std::uint64_t>(); }

const json::object* find(const json::array& a, const char* key, std::string_view value) {
  for (const auto& e : a) {
    if (e.as_object().at(key).as_string() == value) return &e.as_object();
  }
  return nullptr;
}

TEST(Status, BrokerAndEdgeShowWhatRuns) {
  System sys;
  sys.start_all();  // the default policy routes demo, slow, ghost, other; the connector serves demo

  const auto b = status(sys.broker_admin_port);
  EXPECT_EQ(b.at("service").as_string(), "broker");
  // Not ready yet: ghost is routed and nobody serves it (ready_grace).
  EXPECT_FALSE(b.at("ready").as_bool());
  const auto& config = b.at("config").as_object();
  EXPECT_GT(num(config, "version"), 0u);
  EXPECT_LT(num(config, "age_seconds"), 60u);
  const auto& connectors = b.at("connectors").as_array();
  ASSERT_EQ(connectors.size(), 1u) << json::serialize(b);
  const auto& c = connectors[0].as_object();
  EXPECT_EQ(c.at("id").as_string(), "connector-1");
  EXPECT_EQ(c.at("identity").as_string(), "spiffe://postern.dev/connector/green");
  EXPECT_EQ(json::serialize(c.at("aliases")), R"(["demo"])");
  EXPECT_GE(num(c, "lanes"), 1u);
  EXPECT_EQ(num(c, "in_flight"), 0u);
  EXPECT_FALSE(c.at("since").as_string().empty());
  // Routed aliases, and which are served here.
  const auto& aliases = b.at("aliases").as_array();
  const auto* demo = find(aliases, "alias", "demo");
  const auto* ghost = find(aliases, "alias", "ghost");
  ASSERT_TRUE(demo && ghost) << json::serialize(aliases);
  EXPECT_TRUE(demo->at("routed").as_bool());
  EXPECT_TRUE(demo->at("served").as_bool());
  EXPECT_TRUE(ghost->at("routed").as_bool());
  EXPECT_FALSE(ghost->at("served").as_bool());

  const auto e = status(sys.edge_admin_port);
  EXPECT_EQ(e.at("service").as_string(), "edge");
  EXPECT_EQ(num(e.at("config").as_object(), "version"), num(config, "version"));
  const auto& brokers = e.at("brokers").as_array();
  ASSERT_EQ(brokers.size(), 1u) << json::serialize(e);
  EXPECT_GE(num(brokers[0].as_object(), "lanes_up"), 1u);
  EXPECT_TRUE(brokers[0].as_object().at("reachable").as_bool());

  // For a person: HTML by default.
  const auto page = curl({"http://127.0.0.1:" + std::to_string(sys.broker_admin_port) + "/status"});
  EXPECT_EQ(page.header("content-type"), "text/html; charset=utf-8");
  EXPECT_NE(page.body.find("<table"), std::string::npos);
  EXPECT_NE(page.body.find("spiffe://postern.dev/connector/green"), std::string::npos);

  if (!std::filesystem::exists("/usr/bin/chromium")) GTEST_SKIP() << "Debian's chromium is not installed";
  const auto out_dir = std::filesystem::current_path() / "test-output";
  std::filesystem::create_directories(out_dir);
  for (const auto& [name, port, expect, also] :
       {std::tuple<std::string, std::uint16_t, std::string, std::string>{"broker", sys.broker_admin_port, "ghost",
                                                                          "connector-1"},
        {"edge", sys.edge_admin_port, "lanes up", "brokers"}}) {
    const auto shot = (out_dir / ("status-" + name + ".png")).string();
    std::filesystem::remove(shot);
    auto browser = Process::start({system_python(), source_path("tests/support/browser.py"),
                                   "http://127.0.0.1:" + std::to_string(port) + "/status", "--expect", expect,
                                   "--expect", also, "--screenshot", shot, "--timeout", "20"},
                                  sys.dir().file("browser-" + name + ".log"));
    ASSERT_TRUE(browser->wait(40s).has_value());
    const std::string log = browser->log();
    EXPECT_TRUE(json::parse(log.substr(0, log.find('\n'))).as_object().at("ok").as_bool()) << log;
    std::ifstream png(shot, std::ios::binary);
    char magic[4] = {};
    png.read(magic, 4);
    EXPECT_EQ(std::string(magic + 1, 3), "PNG") << shot;
    std::printf("[ info ] %s status page: %s\n", name.c_str(), shot.c_str());
  }
}

}  // namespace
}  // namespace postern::testing
