// Prometheus for real: Debian's prometheus scrapes the four services, every
// target comes up, a request counter reads back after traffic; and
// `promtool check metrics` accepts every service's /metrics.

#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "support/http.hpp"
#include "support/sockets.hpp"
#include "support/system.hpp"

namespace postern::testing {
namespace {

using namespace std::chrono_literals;

std::string http_get(std::uint16_t port, const std::string& path) {
  return curl({"http://127.0.0.1:" + std::to_string(port) + path}, 10s).body;
}

// The scalar value of an instant query with one result (0 if none).
double query(std::uint16_t port, const std::string& url_encoded_query) {
  const auto body = http_get(port, "/api/v1/query?query=" + url_encoded_query);
  const auto at = body.find("\"value\":[");
  if (at == std::string::npos) return 0.0;
  const auto q = body.find('"', body.find(',', at) + 1);
  return std::stod(body.substr(q + 1, body.find('"', q + 1) - q - 1));
}

TEST(Prometheus, ScrapesEveryServiceAndReadsBackTheRequestCounter) {
  ASSERT_EQ(run_command({"sh", "-c", "command -v prometheus && command -v promtool"}).exit_code, 0)
      << "prometheus and promtool are installed by deploy/local/install-deps.sh";
  System sys;
  sys.start_all();
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
}

}  // namespace
}  // namespace postern::testing
