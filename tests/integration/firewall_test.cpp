// Proof with a real firewall: the green zone (policy, native service,
// connector) in a network namespace whose nftables ruleset drops every new
// inbound connection, the DMZ (broker, edge) in another, joined by a veth
// pair. Requests still cross, because the connector dials out; a connection
// from the DMZ into the green zone does not.

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>

#include "support/http.hpp"
#include "support/system.hpp"
#include "support/ws.hpp"

namespace postern::testing {
namespace {

using namespace std::chrono_literals;

constexpr const char* kDmzIp = "10.77.0.1";
constexpr const char* kGreenIp = "10.77.0.2";

// Runs a command; returns its exit code (stderr kept for messages).
CommandResult sh(const std::string& script) { return run_command({"sh", "-c", script}, 20s); }

class Zones {
 public:
  Zones() : dmz_("pst-dmz-" + std::to_string(::getpid())), green_("pst-green-" + std::to_string(::getpid())) {}
  ~Zones() { sh("ip netns del " + dmz_ + " 2>/dev/null; ip netns del " + green_ + " 2>/dev/null"); }

  /// Empty string on success, else why the machine does not allow it.
  std::string create() {
    const std::string veth_d = "pstd" + std::to_string(::getpid() % 100000);
    const std::string veth_g = "pstg" + std::to_string(::getpid() % 100000);
    auto r = sh("set -e; ip netns add " + dmz_ + "; ip netns add " + green_ + "; ip link add " + veth_d +
                " type veth peer name " + veth_g + "; ip link set " + veth_d + " netns " + dmz_ + "; ip link set " +
                veth_g + " netns " + green_ + "; ip -n " + dmz_ + " addr add " + kDmzIp + "/30 dev " + veth_d +
                "; ip -n " + green_ + " addr add " + kGreenIp + "/30 dev " + veth_g + "; ip -n " + dmz_ +
                " link set " + veth_d + " up; ip -n " + green_ + " link set " + veth_g + " up; ip -n " + dmz_ +
                " link set lo up; ip -n " + green_ + " link set lo up");
    if (r.exit_code != 0) return "network namespaces or veth not permitted here: " + r.err;
    return {};
  }

  /// The green zone's firewall: drop every new inbound connection; replies
  /// to connections it opened itself (and loopback) pass.
  CommandResult close_green() {
    return sh("ip netns exec " + green_ +
              " nft -f - <<'EOF'\n"
              "table inet green_zone {\n"
              "  chain input {\n"
              "    type filter hook input priority 0; policy drop;\n"
              "    iif lo accept\n"
              "    ct state established,related accept\n"
              "  }\n"
              "}\n"
              "EOF");
  }

  std::vector<std::string> in_dmz(std::vector<std::string> argv) const { return in(dmz_, std::move(argv)); }
  std::vector<std::string> in_green(std::vector<std::string> argv) const { return in(green_, std::move(argv)); }
  const std::string& dmz() const { return dmz_; }
  const std::string& green() const { return green_; }

 private:
  static std::vector<std::string> in(const std::string& ns, std::vector<std::string> argv) {
    argv.insert(argv.begin(), {"ip", "netns", "exec", ns});
    return argv;
  }
  std::string dmz_, green_;
};

// A TCP connect from the DMZ namespace; true if it was accepted.
bool dmz_can_connect(const Zones& z, const std::string& ip, std::uint16_t port) {
  auto r = run_command(z.in_dmz({"timeout", "1", "bash", "-c",
                                 "exec 3<>/dev/tcp/" + ip + "/" + std::to_string(port)}),
                       10s);
  return r.exit_code == 0;
}

TEST(Firewall, GreenZoneAdmitsNoInboundConnectionYetRequestsCross) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root for network namespaces";
  if (run_command({"sh", "-c", "command -v nft"}).exit_code != 0) GTEST_SKIP() << "nft (nftables) not installed";
  Zones z;
  if (auto why = z.create(); !why.empty()) GTEST_SKIP() << why;

  System sys;  // for its temp dir and certificates only
  const auto& c = sys.certs();
  auto file = [&](const std::string& name, const std::string& text) {
    write_file(sys.dir().file(name), text);
    return sys.dir().file(name);
  };

  // Green zone: native service and policy listen on every address, so only
  // the firewall can keep the DMZ out.
  auto demo = Process::start(z.in_green({binary_path("postern-demo"), "--listen", "0.0.0.0:0"}),
                             sys.dir().file("demo.log"));
  const auto demo_port = demo->wait_for_port("http");
  std::filesystem::create_directories(sys.dir().file("keys"));
  write_file(sys.dir().file("keys/app"), "zone-key-123");
  file("policy.yaml",
       "apis:\n"
       "  - {name: demo, version: \"1.0\", routing: \"apigateway://demo/\"}\n"
       "  - {name: chat, version: \"1.0\", type: websocket, routing: \"apigateway://demo/api/demo/\"}\n"
       "  - name: keyed\n    version: \"1.0\"\n    routing: apigateway://demo/\n    allow_overlap: true\n    enforcement: GREEN\n"
       "    policies: {identify: {identifiers: [API_KEY]}}\n"
       "applications:\n  - {name: app, api_keys: [{key_file: keys/app}], apis: [keyed]}\n");
  auto policy = Process::start(
      z.in_green({binary_path("postern-policy"), "--config",
                  file("policy-service.yaml", "id: policy-fw\nadmin: {listen: \"127.0.0.1:0\"}\n"
                                              "listen: {listen: \"0.0.0.0:0\"}\npolicy_file: \"" +
                                                  sys.dir().file("policy.yaml") + "\"\nsigning_key_file: \"" +
                                                  c.signing_key + "\"\n")}),
      sys.dir().file("policy.log"));
  const auto policy_port = policy->wait_for_port("policy");

  // DMZ: broker (registration port on the veth address) and edge.
  auto broker = Process::start(
      z.in_dmz({binary_path("postern-broker"), "--config",
                file("broker.yaml", std::string("id: broker-fw\nadmin: {listen: \"127.0.0.1:0\"}\n") +
                                        "registration:\n  listen: \"" + kDmzIp + ":0\"\n  tls: {cert_file: \"" +
                                        c.broker_crt + "\", key_file: \"" + c.broker_key + "\", client_ca_file: \"" +
                                        c.ca + "\"}\nrelay: {listen: \"127.0.0.1:0\"}\nidentities:\n" +
                                        "  - {identity: \"spiffe://postern.dev/connector/green\", aliases: [demo], "
                                        "publish_config: true}\ntrusted_config_keys: [\"" + c.signing_pub + "\"]\n")}),
      sys.dir().file("broker.log"));
  const auto reg_port = broker->wait_for_port("registration");
  const auto relay_port = broker->wait_for_port("relay");
  auto edge = Process::start(
      z.in_dmz({binary_path("postern-edge"), "--config",
                file("edge.yaml", "id: edge-fw\nadmin: {listen: \"127.0.0.1:0\"}\nlisteners: [{listen: \"127.0.0.1:0\"}]\n"
                                  "broker: {address: \"127.0.0.1:" + std::to_string(relay_port) + "\"}\n"
                                  "trusted_config_keys: [\"" + c.signing_pub + "\"]\n")}),
      sys.dir().file("edge.log"));
  const auto edge_port = edge->wait_for_port("external");
  edge->wait_for_log("\"msg\":\"edge ready\"");

  // Without the firewall the green zone is reachable: the check below is
  // not vacuous.
  ASSERT_TRUE(dmz_can_connect(z, kGreenIp, demo_port)) << "veth path broken";
  auto fw = z.close_green();
  ASSERT_EQ(fw.exit_code, 0) << fw.err;
  EXPECT_FALSE(dmz_can_connect(z, kGreenIp, demo_port)) << "native service reachable from the DMZ";
  EXPECT_FALSE(dmz_can_connect(z, kGreenIp, policy_port)) << "policy service reachable from the DMZ";

  // The connector dials out through the closed firewall.
  auto connector = Process::start(
      z.in_green({binary_path("postern-connector"), "--config",
                  file("connector.yaml",
                       "id: connector-fw\nbrokers: [\"" + std::string(kDmzIp) + ":" + std::to_string(reg_port) +
                           "\"]\ntls: {ca_file: \"" + c.ca + "\", cert_file: \"" + c.connector_crt +
                           "\", key_file: \"" + c.connector_key + "\", server_name: localhost}\n"
                           "aliases:\n  demo: {url: \"http://127.0.0.1:" + std::to_string(demo_port) + "\"}\n"
                           "policy: {address: \"127.0.0.1:" + std::to_string(policy_port) + "\"}\n"
                           "trusted_config_keys: [\"" + c.signing_pub + "\"]\n")}),
      sys.dir().file("connector.log"));
  connector->wait_for_log("\"msg\":\"attached\"");
  edge->wait_for_log("\"msg\":\"policy snapshot applied\"");

  const std::string base = "http://127.0.0.1:" + std::to_string(edge_port);
  auto in_dmz_curl = [&](const std::string& path) {
    return run_command(z.in_dmz({"curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
                                 base + path}),
                       20s)
        .out;
  };
  EXPECT_EQ(in_dmz_curl("/gateway/demo/1.0/"), "200");
  EXPECT_EQ(in_dmz_curl("/gateway/keyed/1.0/headers"), "401") << "green-zone policy applied";
  EXPECT_EQ(in_dmz_curl("/gateway/keyed/1.0/headers?x-Gateway-APIKey=zone-key-123"), "200");
  // A WebSocket session crosses too: the upgrade, messages both ways, and
  // the native service's close code.
  const auto ws = run_command(z.in_dmz({system_python(), source_path("tests/support/wsclient.py"), "script",
                                        "ws://127.0.0.1:" + std::to_string(edge_port) + "/gateway/chat/1.0/fw?user=fw",
                                        "send=through the firewall", "recv=1", "send=/close 4010 done", "wait_close=5"}),
                              30s);
  EXPECT_NE(ws.out.find("\"data\": \"Message Received from fw: through the firewall\""), std::string::npos) << ws.out << ws.err;
  EXPECT_NE(ws.out.find("\"close_code\": 4010"), std::string::npos) << ws.out;
  // Still closed while traffic flows; and nothing in the green zone listens
  // for the DMZ except what the firewall drops.
  EXPECT_FALSE(dmz_can_connect(z, kGreenIp, demo_port));
  const auto drops = sh("ip netns exec " + z.green() + " nft list ruleset");
  EXPECT_NE(drops.out.find("policy drop"), std::string::npos) << drops.out;
}

}  // namespace
}  // namespace postern::testing
