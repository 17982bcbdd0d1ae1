// Prometheus for real: Debian's prometheus scrapes the four services, every
// target comes up, a request counter reads back after traffic;
// `promtool check metrics` accepts every service's /metrics; and every
// query of the Grafana dashboard the Helm chart ships runs there, on
// metrics the services export.

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <chrono>
#include <ctime>
#include <regex>
#include <set>
#include <string>

#include "common/net/http_headers.hpp"
#include "support/files.hpp"
#include "support/http.hpp"
#include "support/sockets.hpp"
#include "support/system.hpp"
#include "support/ws.hpp"

namespace postern::testing {
namespace {

using namespace std::chrono_literals;

std::string http_get(std::uint16_t port, const std::string& path) {
  return curl({"http://127.0.0.1:" + std::to_string(port) + path}, 10s).body;
}

// APIs whose traffic makes every family the dashboard reads appear: a
// WebSocket API, and API-key checks at the edge (DMZ) and the connector.
const char* kPolicy = R"(apis:
  - {name: demo, version: "1.0", routing: "apigateway://demo/", allow_overlap: true}
  - {name: chat, version: "1.0", type: websocket, routing: "apigateway://demo/api/demo/"}
  - {name: keyed, version: "1.0", routing: "apigateway://demo/", policies: {identify: {identifiers: [API_KEY]}}, allow_overlap: true}
  - name: keyed-green
    version: "1.0"
    routing: apigateway://demo/
    allow_overlap: true
    enforcement: GREEN
    policies: {identify: {identifiers: [API_KEY]}}
)";

// The scalar value of an instant query with one result (0 if none).
double query(std::uint16_t port, const std::string& url_encoded_query) {
  const auto body = http_get(port, "/api/v1/query?query=" + url_encoded_query);
  const auto at = body.find("\"value\":[");
  if (at == std::string::npos) return 0.0;
  const auto q = body.find('"', body.find(',', at) + 1);
  return std::stod(body.substr(q + 1, body.find('"', q + 1) - q - 1));
}

TEST(Prometheus, ScrapesEveryServiceAndRunsEveryDashboardQuery) {
  ASSERT_EQ(run_command({"sh", "-c", "command -v prometheus && command -v promtool"}).exit_code, 0)
      << "prometheus and promtool are installed by deploy/local/install-deps.sh";
  System sys;
  sys.start_demo();
  sys.start_policy(kPolicy);
  sys.start_broker();
  sys.start_connector();
  sys.start_edge();
  const auto connector_admin = sys.connectors[0]->wait_for_port("admin");
  const std::pair<const char*, std::uint16_t> targets[] = {{"edge", sys.edge_admin_port},
                                                           {"broker", sys.broker_admin_port},
                                                           {"connector", connector_admin},
                                                           {"policy", sys.policy_admin_port}};

  // Every exposition passes promtool's checks.
  for (const auto& [name, port] : targets) {
    write_file(sys.dir().file(std::string(name) + ".metrics"), http_get(port, "/metrics"));
    auto check = run_command({"sh", "-c", "promtool check metrics < \"$0\"", sys.dir().file(std::string(name) + ".metrics")});
    EXPECT_EQ(check.exit_code, 0) << name << ": " << check.out << check.err;
  }
  // What every Prometheus client exports about its process, and the build.
  for (const auto& [name, port] : targets) {
    const auto m = http_get(port, "/metrics");
    EXPECT_GT(metric_value(m, "process_cpu_seconds_total"), 0.0) << name;
    EXPECT_GT(metric_value(m, "process_resident_memory_bytes"), 1e6) << name;
    EXPECT_GT(metric_value(m, "process_start_time_seconds"), 1.7e9) << name;
    EXPECT_GT(metric_value(m, "process_open_fds"), 2.0) << name;
    EXPECT_GT(metric_value(m, "process_max_fds"), metric_value(m, "process_open_fds")) << name;
    EXPECT_GE(metric_value(m, "process_threads"), 1.0) << name;
    EXPECT_NE(m.find("postern_build_info{version=\""), std::string::npos) << name;
  }
  // When each certificate expires (the dev certificates: years from now).
  const auto broker_m = http_get(sys.broker_admin_port, "/metrics");
  const auto cert_line = broker_m.find("postern_certificate_expiry_timestamp_seconds{field=\"registration.tls.cert_file\"");
  ASSERT_NE(cert_line, std::string::npos) << broker_m;
  EXPECT_GT(std::stod(broker_m.substr(broker_m.find("} ", cert_line) + 2)), static_cast<double>(std::time(nullptr)) + 86400);
  EXPECT_NE(http_get(connector_admin, "/metrics").find("postern_certificate_expiry_timestamp_seconds{field="),
            std::string::npos);

  std::string cfg = "global: {scrape_interval: 1s, scrape_timeout: 900ms}\nscrape_configs:\n";
  for (const auto& [name, port] : targets) {
    cfg += "  - job_name: " + std::string(name) + "\n    static_configs: [{targets: [\"127.0.0.1:" +
           std::to_string(port) + "\"]}]\n";
  }
  write_file(sys.dir().file("prometheus.yml"), cfg);
  const auto prom_port = free_port();
  auto prom = Process::start({"prometheus", "--config.file=" + sys.dir().file("prometheus.yml"),
                              "--storage.tsdb.path=" + sys.dir().file("tsdb"),
                              "--web.listen-address=127.0.0.1:" + std::to_string(prom_port)},
                             sys.dir().file("prometheus.log"));
  ASSERT_TRUE(wait_http_status(prom_port, "/-/ready", 200, 30s)) << prom->log_tail();

  EXPECT_TRUE(wait_until([&] { return query(prom_port, "sum(up)") == 4.0; }, 20s))
      << http_get(prom_port, "/api/v1/targets");

  for (int i = 0; i < 5; ++i) ASSERT_EQ(curl({sys.edge_url("/gateway/demo/1.0/")}).status, 200);
  const std::string demo_requests = "sum(postern_edge_requests_total%7Bapi%3D%22demo%22%7D)";
  EXPECT_TRUE(wait_until([&] { return query(prom_port, demo_requests) >= 5.0; }, 20s))
      << query(prom_port, demo_requests);

  // The dashboard's queries. Traffic first, so that each family has a
  // sample: a WebSocket message each way, a key missing at the edge and at
  // the connector.
  const auto ws = ws_client({"script", "ws://127.0.0.1:" + std::to_string(sys.edge_port) + "/gateway/chat/1.0/",
                             "binary=100", "recv=1"});
  ASSERT_EQ(num(ws, "status"), 101) << boost::json::serialize(ws);
  EXPECT_EQ(curl({sys.edge_url("/gateway/keyed/1.0/")}).status, 401);
  EXPECT_EQ(curl({sys.edge_url("/gateway/keyed-green/1.0/")}).status, 401);
  std::string exported;
  for (const auto& [name, port] : targets) exported += http_get(port, "/metrics");
  const auto dashboard =
      boost::json::parse(read_file(source_path("deploy/helm/postern/dashboards/postern.json"))).as_object();
  const std::regex metric_name("postern_[a-z0-9_]+");
  std::set<std::string> named;
  int queries = 0;
  for (const auto& panel : dashboard.at("panels").as_array()) {
    const auto& p = panel.as_object();
    for (const auto& target : p.at("targets").as_array()) {
      std::string expr(target.as_object().at("expr").as_string());
      for (std::sregex_iterator it(expr.begin(), expr.end(), metric_name), end; it != end; ++it) {
        named.insert(it->str());
      }
      // Grafana's variables, as "All" and a typical range fill them in.
      expr = std::regex_replace(expr, std::regex("\\$namespace"), ".*");
      expr = std::regex_replace(expr, std::regex("\\$__rate_interval"), "1m");
      const auto body = http_get(prom_port, "/api/v1/query?query=" + net::percent_encode(expr));
      EXPECT_NE(body.find("\"status\":\"success\""), std::string::npos)
          << "panel '" << p.at("title").as_string().c_str() << "': " << expr << "\n" << body;
      ++queries;
    }
  }
  EXPECT_GE(queries, 8);
  for (std::string name : named) {
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      if (name.ends_with(suffix) && exported.find("# TYPE " + name + " ") == std::string::npos) {
        name.resize(name.size() - std::string_view(suffix).size());
      }
    }
    EXPECT_NE(exported.find("# TYPE " + name + " "), std::string::npos)
        << "the dashboard reads " << name << ", which no service exports";
  }
}

}  // namespace
}  // namespace postern::testing
