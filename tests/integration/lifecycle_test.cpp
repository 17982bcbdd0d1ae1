// Attach to every broker address, silent connectors, edge drain.

#include <gtest/gtest.h>

#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <fstream>
#include <sstream>
#include <functional>
#include <iostream>
#include <thread>
#include <vector>

#include "support/http.hpp"
#include "support/load.hpp"
#include "support/sockets.hpp"
#include "support/system.hpp"

namespace postern::testing {
namespace {

using namespace std::chrono_literals;

double attached(std::uint16_t admin_port) {
  return metric_value(scrape(admin_port), "postern_broker_connectors_attached", {{"alias", "demo"}});
}

// CPU time (user + system, all threads) a process has used so far.
std::chrono::milliseconds cpu_used(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // Fields after the command name (which may hold spaces) start at ") ".
  std::istringstream rest(stat.substr(stat.rfind(')') + 2));
  std::string field;
  long ticks = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i >= 14) ticks += std::stol(field);  // utime, stime
  }
  return std::chrono::milliseconds(ticks * 1000 / sysconf(_SC_CLK_TCK));
}

// A second broker on the same registration port as the first (the System's,
// started), on 127.0.0.2, with free ports for the rest.
std::unique_ptr<Process> start_broker_on_127_0_0_2(System& sys) {
  std::string cfg = read_file(sys.dir().file("broker.yaml"));
  // The first broker was written with port 0 everywhere; B takes A's
  // registration port on 127.0.0.2 and free ports for the rest.
  const std::string reg = "registration:\n  listen: \"127.0.0.1:0\"";
  EXPECT_NE(cfg.find(reg), std::string::npos) << cfg;
  cfg.replace(cfg.find(reg), reg.size(),
              "registration:\n  listen: \"127.0.0.2:" + std::to_string(sys.registration_port) + "\"");
  write_file(sys.dir().file("broker-b.yaml"), cfg);
  return Process::start({binary_path("postern-broker"), "--config", sys.dir().file("broker-b.yaml")},
                        sys.dir().file("broker-b.log"));
}

bool mount_namespaces_permitted() {
  return run_command({"unshare", "-m", "--propagation", "private", "true"}, 10s).exit_code == 0;
}

// A connector that dials brokers.test, resolved through `hosts` (bind-mounted
// over /etc/hosts in a private mount namespace), every `resolve_interval`.
std::unique_ptr<Process> start_connector_resolving(System& sys, const std::string& hosts,
                                                   const std::string& resolve_interval) {
  const std::string ccfg = sys.dir().file("connector-dns.yaml");
  write_file(ccfg, "id: connector-dns\nlog: {level: debug}\nbrokers: [\"brokers.test:" +
                       std::to_string(sys.registration_port) + "\"]\n" + "tls:\n  ca_file: \"" + sys.certs().ca +
                       "\"\n  cert_file: \"" + sys.certs().connector_crt + "\"\n  key_file: \"" +
                       sys.certs().connector_key + "\"\n  server_name: localhost\n" + "lanes: 2\nresolve_interval: " +
                       resolve_interval + "\naliases:\n  demo: {url: \"" + sys.demo_url("") + "\"}\n" +
                       "policy: {address: \"127.0.0.1:" + std::to_string(sys.policy_port) + "\"}\n" +
                       "trusted_config_keys: [\"" + sys.certs().signing_pub + "\"]\n");
  return Process::start(
      {"unshare", "-m", "--propagation", "private", "sh", "-c",
       "mount --bind \"$0\" /etc/hosts && exec \"$1\" --config \"$2\"", hosts, binary_path("postern-connector"), ccfg},
      sys.dir().file("connector-dns.log"));
}

// A headless Service: one name, one address per broker replica. The
// connector sees a hosts file (in a private mount namespace) where
// brokers.test resolves to 127.0.0.1 and 127.0.0.2.
TEST(Lifecycle, ConnectorAttachesToEveryAddressOfABrokerName) {
  System sys;
  sys.start_demo();
  sys.start_broker();
  auto broker_b = start_broker_on_127_0_0_2(sys);
  const auto b_relay = broker_b->wait_for_port("relay");
  const auto b_admin = broker_b->wait_for_port("admin");

  const std::string hosts = sys.dir().file("hosts");
  write_file(hosts, "127.0.0.1 localhost\n127.0.0.1 brokers.test\n127.0.0.2 brokers.test\n");
  if (!mount_namespaces_permitted()) GTEST_SKIP() << "mount namespaces not permitted here";
  auto connector = start_connector_resolving(sys, hosts, "500ms");
  EXPECT_TRUE(wait_until([&] { return attached(sys.broker_admin_port) == 1.0 && attached(b_admin) == 1.0; }, 10s))
      << connector->log_tail();
  EXPECT_EQ(connector->count_log("\"msg\":\"attached\""), 2);

  // A replica leaves DNS: its link is drained. It comes back: attached again.
  // (The hosts file is rewritten in place; the bind mount sees the inode.)
  write_file(hosts, "127.0.0.1 localhost\n127.0.0.1 brokers.test\n");
  EXPECT_TRUE(wait_until([&] { return attached(b_admin) == 0.0; }, 10s)) << connector->log_tail();
  EXPECT_EQ(attached(sys.broker_admin_port), 1.0);
  write_file(hosts, "127.0.0.1 localhost\n127.0.0.1 brokers.test\n127.0.0.2 brokers.test\n");
  EXPECT_TRUE(wait_until([&] { return attached(b_admin) == 1.0; }, 10s)) << connector->log_tail();

  // An edge on either broker reaches the connector.
  // (This connector is not in sys.connectors: wait for the snapshot here.)
  sys.start_edge();
  sys.edge->wait_for_log("\"msg\":\"policy snapshot applied\"");
  EXPECT_EQ(curl({sys.edge_url("/gateway/demo/1.0/")}).status, 200);
  sys.edge.reset();
  sys.relay_port = b_relay;
  sys.start_edge();
  sys.edge->wait_for_log("\"msg\":\"policy snapshot applied\"");
  EXPECT_EQ(curl({sys.edge_url("/gateway/demo/1.0/")}).status, 200);
}

// A broker that moves (its pod rescheduled: the old address dies, DNS names
// a new one) is found again about a second after the link lost it, not
// after resolve_interval (60 s here): the lost link makes the connector
// look the name up again.
TEST(Lifecycle, ConnectorLooksABrokerUpAgainSoonAfterLosingIt) {
  System sys;
  sys.start_demo();
  sys.start_broker();
  const std::string hosts = sys.dir().file("hosts");
  write_file(hosts, "127.0.0.1 localhost\n127.0.0.1 brokers.test\n");
  if (!mount_namespaces_permitted()) GTEST_SKIP() << "mount namespaces not permitted here";
  auto connector = start_connector_resolving(sys, hosts, "60s");
  ASSERT_TRUE(wait_until([&] { return attached(sys.broker_admin_port) == 1.0; }, 10s)) << connector->log_tail();
  const auto admin = connector->wait_for_port("admin");
  const double lookups = metric_value(scrape(admin), "postern_connector_broker_lookups_total");
  EXPECT_GE(lookups, 1.0);

  // The broker moves to 127.0.0.2: the new one starts, DNS follows, the old
  // one goes away.
  auto broker_b = start_broker_on_127_0_0_2(sys);
  const auto b_admin = broker_b->wait_for_port("admin");
  write_file(hosts, "127.0.0.1 localhost\n127.0.0.2 brokers.test\n");
  const auto moved = std::chrono::steady_clock::now();
  sys.broker.reset();
  EXPECT_TRUE(wait_until([&] { return attached(b_admin) == 1.0; }, 10s)) << connector->log_tail();
  const auto found = std::chrono::steady_clock::now() - moved;
  EXPECT_LT(found, 10s);
  EXPECT_GT(metric_value(scrape(admin), "postern_connector_broker_lookups_total"), lookups);
  std::cout << "moved broker attached after "
            << std::chrono::duration_cast<std::chrono::milliseconds>(found).count() << " ms\n";
}

// A connector that stops talking (SIGSTOP: the TCP connection stays up) is
// dropped after heartbeat_timeout (3 s in the test config), and comes back
// once it runs again.
TEST(Lifecycle, SilentConnectorIsDroppedAndReturns) {
  System sys;
  sys.start_all();
  ASSERT_EQ(curl({sys.edge_url("/gateway/demo/1.0/")}).status, 200);
  auto& c = *sys.connectors[0];
  c.signal(SIGSTOP);
  const auto t0 = std::chrono::steady_clock::now();
  sys.broker->wait_for_log("\"msg\":\"connector detached\".*\"reason\":\"heartbeat timeout\"", 10s);
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_LT(took, 5s);
  EXPECT_EQ(attached(sys.broker_admin_port), 0.0);
  EXPECT_EQ(curl({sys.edge_url("/gateway/demo/1.0/")}).status, 503);
  c.signal(SIGCONT);
  EXPECT_TRUE(wait_until([&] { return curl({sys.edge_url("/gateway/demo/1.0/")}).status == 200; }, 10s));
}

// Every service sleeps when nothing happens, including after a burst (the
// timers left then are heartbeats and watches). The broker's trim tick was
// once `2s / 4`, which is 0 s: it spun, a whole core, for ever. A process that spins uses about
// 2,000 ms of CPU in these 2 s; an idle one a few ms.
TEST(Lifecycle, IdleServicesDoNotSpin) {
  System sys;
  sys.start_all();
  Load load;
  load.start({sys.edge_port}, "/gateway/demo/1.0/", 12, 10s, 20s);
  ASSERT_TRUE(wait_until([&] { return load.ok() >= 200; }, 20s));
  load.stop();
  ASSERT_EQ(load.failed(), 0);
  std::this_thread::sleep_for(500ms);
  const std::vector<std::pair<const char*, Process*>> services = {
      {"edge", sys.edge.get()},
      {"broker", sys.broker.get()},
      {"connector", sys.connectors[0].get()},
      {"policy", sys.policy.get()}};
  std::vector<std::chrono::milliseconds> before;
  for (const auto& [name, p] : services) before.push_back(cpu_used(p->pid()));
  std::this_thread::sleep_for(2s);
  for (std::size_t i = 0; i < services.size(); ++i) {
    const auto used = cpu_used(services[i].second->pid()) - before[i];
    EXPECT_LT(used, 400ms) << services[i].first << " used " << used.count() << " ms of CPU in 2 s of idleness";
  }
}

// SIGTERM on the edge: readiness drops, requests in flight finish, idle
// keep-alive connections are closed, new connections are refused, exit 0.
TEST(Lifecycle, EdgeDrainsOnSigterm) {
  System sys;
  sys.start_all();
  // An idle keep-alive connection: one request answered, none since.
  UniqueFd idle = connect_loopback(sys.edge_port, 2s);
  ASSERT_TRUE(idle.get() >= 0);
  ASSERT_TRUE(send_all(idle.get(), "GET /gateway/demo/1.0/ HTTP/1.1\r\nHost: edge\r\n\r\n"));
  ASSERT_EQ(recv_response(idle.get(), 5s).substr(0, 12), "HTTP/1.1 200");
  auto in_flight = [&] { return metric_value(scrape(sys.edge_admin_port), "postern_edge_requests_in_flight"); };
  // That request counts as in flight until a moment after its response.
  ASSERT_TRUE(wait_until([&] { return in_flight() == 0.0; }, 10s));
  CurlResult slow;
  std::jthread t([&] { slow = curl({sys.edge_url("/gateway/demo/1.0/slow?ms=1500")}, 20s); });
  ASSERT_TRUE(wait_until([&] { return in_flight() >= 1.0; }, 10s));
  sys.edge->signal(SIGTERM);
  EXPECT_TRUE(wait_http_status(sys.edge_admin_port, "/readyz", 503, 2s));
  EXPECT_FALSE(can_connect(sys.edge_port, 500ms)) << "a draining edge accepts no new connections";
  // The idle connection is closed by the edge: read returns 0.
  char byte;
  timeval tv{2, 0};
  setsockopt(idle.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  EXPECT_EQ(::recv(idle.get(), &byte, 1, 0), 0);
  t.join();
  EXPECT_EQ(slow.status, 200);
  EXPECT_EQ(slow.body, "slow\n");
  auto code = sys.edge->wait(10s);
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0);
}

// A client that picked this edge before its drain began is answered, not
// dropped: connections still in the listener's backlog when the drain starts
// (closing the listener would reset them), connections accepted whose
// session had not started, and a connection whose first request comes a
// moment after the drain began. Each gets its response (with Connection:
// close once the drain has begun); only a connection that stays silent is
// closed, after a short grace.
TEST(Lifecycle, DrainingEdgeAnswersConnectionsOpenedBeforeTheDrain) {
  System sys;
  sys.start_all();
  const std::string request = "GET /gateway/demo/1.0/ HTTP/1.1\r\nHost: edge\r\n\r\n";
  UniqueFd late = connect_loopback(sys.edge_port, 2s);
  UniqueFd silent = connect_loopback(sys.edge_port, 2s);
  ASSERT_TRUE(late && silent);
  // Stopped, the edge accepts nothing: the kernel completes these
  // connections and queues them, requests included, in the backlog.
  sys.edge->signal(SIGSTOP);
  std::vector<UniqueFd> queued;
  for (int i = 0; i < 8; ++i) {
    UniqueFd fd = connect_loopback(sys.edge_port, 2s);
    ASSERT_TRUE(fd) << "connection " << i;
    ASSERT_TRUE(send_all(fd.get(), request));
    queued.push_back(std::move(fd));
  }
  sys.edge->signal(SIGTERM);
  sys.edge->signal(SIGCONT);
  EXPECT_TRUE(wait_http_status(sys.edge_admin_port, "/readyz", 503, 2s));
  ASSERT_TRUE(send_all(late.get(), request));
  queued.push_back(std::move(late));
  for (std::size_t i = 0; i < queued.size(); ++i) {
    const std::string got = recv_to_end(queued[i].get(), 10s);
    EXPECT_EQ(got.substr(0, 12), "HTTP/1.1 200") << "connection " << i << ": " << got.substr(0, 200);
    // Queued requests the edge read before its signal handler ran were
    // answered as keep-alive (and the connection closed after); the late
    // request was read during the drain.
    if (i + 1 == queued.size()) {
      EXPECT_NE(got.find("Connection: close"), std::string::npos) << got.substr(0, 200);
    }
  }
  // The silent one: closed without a response once the grace is over.
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(recv_to_end(silent.get(), 10s), "");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  auto code = sys.edge->wait(10s);
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0);
}

// A broker's /readyz (what Kubernetes uses to publish it to the edges)
// turns 200 once a connector is attached for every alias the config routes
// to — not at once, when edges would get 503s from a broker whose
// connectors have not come back after a restart — or after ready_grace.
TEST(Lifecycle, BrokerIsReadyOnceItsConnectorsAreBackOrAfterItsGrace) {
  {
    System sys;
    sys.start_demo();
    sys.start_policy("apis:\n  - {name: demo, version: \"1.0\", routing: \"apigateway://demo/\"}\n");
    sys.start_broker("ready_grace: 60s\n");
    EXPECT_TRUE(wait_http_status(sys.broker_admin_port, "/readyz", 503, 2s));
    std::this_thread::sleep_for(500ms);
    EXPECT_TRUE(wait_http_status(sys.broker_admin_port, "/readyz", 503, 1s)) << "ready with no connector";
    sys.start_connector();
    EXPECT_TRUE(wait_http_status(sys.broker_admin_port, "/readyz", 200, 5s));
    sys.broker->wait_for_log("\"msg\":\"broker ready\".*a connector is attached for every alias", 5s);
  }
  {
    // Nobody attaches: ready after the grace period all the same.
    System sys;
    sys.start_policy();
    sys.start_broker("ready_grace: 1500ms\n");
    EXPECT_TRUE(wait_http_status(sys.broker_admin_port, "/readyz", 503, 1s));
    EXPECT_TRUE(wait_http_status(sys.broker_admin_port, "/readyz", 200, 5s));
    sys.broker->wait_for_log("\"msg\":\"broker ready\".*grace period", 5s);
  }
}

}  // namespace
}  // namespace postern::testing
