// Policies with the real binaries: policy service -> connector -> broker ->
// edge, the demo as the native service, curl as the client.

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <csignal>
#include <functional>
#include <thread>

#include "support/http.hpp"
#include "support/system.hpp"

namespace postern::testing {
namespace {

using namespace std::chrono_literals;

constexpr const char* kAlphaKey = "alpha-key-0123456789";
constexpr const char* kBetaKey = "beta-key-9876543210";

// Every status code policy can give, each on an API of its own.
const char* kPolicies = R"(threat_protection:
  max_url_length: {max: 300}
apis:
  - {name: open, version: "1.0", routing: "apigateway://demo/", allow_overlap: true}
  - name: keyed
    version: "1.0"
    routing: apigateway://demo/
    allow_overlap: true
    policies:
      identify: {identifiers: [API_KEY]}
  - name: basic
    version: "1.0"
    routing: apigateway://demo/
    allow_overlap: true
    policies:
      identify: {identifiers: [BASIC]}
  - name: limited
    version: "1.0"
    routing: apigateway://demo/
    allow_overlap: true
    policies:
      throttling:
        rate: [{key: API, requests: 2, per: 60s}]
  - name: limited-slow
    version: "1.0"
    routing: apigateway://demo/
    allow_overlap: true
    timeout: 1s
    policies:
      throttling:
        rate: [{key: API, requests: 5, per: 60s}]
  - name: limited-ws
    version: "1.0"
    type: websocket
    routing: apigateway://demo/api/demo/
    allow_overlap: true
    policies:
      throttling:
        rate: [{key: API, requests: 5, per: 60s}]
  - name: concurrent
    version: "1.0"
    routing: apigateway://demo/
    allow_overlap: true
    policies:
      throttling:
        concurrency: [{key: API, max: 1, retry_after: 2s}]
  - name: guarded
    version: "1.0"
    routing: apigateway://demo/
    allow_overlap: true
    policies:
      threat_protection:
        max_url_length: {max: 100}
        max_header_count: {max: 12}
        max_header_bytes: {max: 2000}
        max_body_bytes: {max: 1000}
        max_json_depth: {max: 3}
  - name: reported
    version: "1.0"
    routing: apigateway://demo/
    allow_overlap: true
    policies:
      threat_protection:
        max_url_length: {max: 10, mode: REPORT}
  - name: denied
    version: "1.0"
    routing: apigateway://demo/
    allow_overlap: true
    policies:
      threat_protection:
        ip_deny: {cidrs: [127.0.0.0/8]}
  - name: mediated
    version: "1.0"
    routing: apigateway://demo/
    allow_overlap: true
    policies:
      transform:
        request_headers: {add: {X-Added: yes-added}, remove: [X-Drop], rename: {X-Old: X-New}}
        request_query: {add: {extra: "1"}, remove: [secret]}
        response_headers: {add: {X-Gateway-Mediated: "true"}}
applications:
  - name: alpha
    api_keys: [{key_file: keys/alpha}]
    # "password", hashed by `postern-policy hash-password --iterations 100000`
    basic: [{username: alice, password_hash: "$pbkdf2-sha256$i=100000$cG9zdGVybi10ZXN0LXNhbHQ$li7O6u0WRCpOnbn3goqACv9ozFKc0WNDGT7sNrUVOX8"}]
    apis: [keyed, basic]
  - name: beta
    api_keys: [{key_file: keys/beta}]
    apis: [open]
)";

class Policies : public ::testing::Test {
 protected:
  void start(const std::string& policy_yaml, const std::string& edge_extra = "") {
    std::filesystem::create_directories(sys.dir().file("keys"));
    write_file(sys.dir().file("keys/alpha"), std::string(kAlphaKey) + "\n");
    write_file(sys.dir().file("keys/beta"), kBetaKey);
    sys.start_demo();
    sys.start_policy(policy_yaml);
    sys.start_broker();
    sys.start_connector();
    sys.start_edge(edge_extra);
  }
  std::string url(const std::string& api, const std::string& rest = "/headers") {
    return sys.edge_url("/gateway/" + api + "/1.0" + rest);
  }
  System sys;
};

TEST_F(Policies, EachStatusOnTheRequestThatShouldGetItAndOnlyOnIt) {
  start(kPolicies);

  // Identify & Authorize.
  auto none = curl({url("keyed")});
  EXPECT_EQ(none.status, 401) << none.body;
  EXPECT_NE(none.header("www-authenticate").find("APIKey"), std::string::npos) << none.headers;
  EXPECT_EQ(none.header("content-type"), "application/problem+json");
  auto wrong = curl({"-H", "x-Gateway-APIKey: not-a-key", url("keyed")});
  EXPECT_EQ(wrong.status, 401);
  EXPECT_EQ(wrong.body.find("not-a-key"), std::string::npos) << wrong.body;
  auto other_app = curl({"-H", std::string("x-Gateway-APIKey: ") + kBetaKey, url("keyed")});
  EXPECT_EQ(other_app.status, 403) << other_app.body;
  EXPECT_NE(other_app.body.find("application 'beta' may not use API 'keyed'"), std::string::npos) << other_app.body;
  auto good = curl({"-H", std::string("X-Gateway-APIKey: ") + kAlphaKey, url("keyed")});
  EXPECT_EQ(good.status, 200) << good.body;
  EXPECT_EQ(good.body.find(kAlphaKey), std::string::npos) << "the native service saw the key: " << good.body;
  EXPECT_EQ(curl({url("open")}).status, 200);

  // HTTP Basic.
  EXPECT_EQ(curl({url("basic")}).status, 401);
  EXPECT_NE(curl({url("basic")}).header("www-authenticate").find("Basic"), std::string::npos);
  EXPECT_EQ(curl({"-u", "alice:wrong", url("basic")}).status, 401);
  EXPECT_EQ(curl({"-u", "alice:password", url("basic")}).status, 200);

  // Request rate: two per minute, each answer says how many are left, the
  // third is refused with the headers that say when to come back.
  auto first = curl({url("limited")});
  EXPECT_EQ(first.status, 200);
  EXPECT_EQ(first.header("ratelimit-limit"), "2");
  EXPECT_EQ(first.header("ratelimit-remaining"), "1");
  EXPECT_FALSE(first.header("ratelimit-reset").empty());
  auto second = curl({url("limited")});
  EXPECT_EQ(second.status, 200);
  EXPECT_EQ(second.header("ratelimit-remaining"), "0");
  EXPECT_TRUE(curl({url("open")}).header("ratelimit-limit").empty()) << "an API without a rate limit";
  auto limited = curl({url("limited")});
  EXPECT_EQ(limited.status, 429) << limited.body;
  EXPECT_FALSE(limited.header("date").empty()) << limited.headers;
  EXPECT_GE(std::stoi(limited.header("retry-after").empty() ? "0" : limited.header("retry-after")), 1);
  EXPECT_EQ(limited.header("ratelimit-limit"), "2");
  EXPECT_EQ(limited.header("ratelimit-remaining"), "0");
  EXPECT_FALSE(limited.header("ratelimit-reset").empty());
  EXPECT_EQ(curl({url("open")}).status, 200) << "another API is not limited";
  // Answers the edge writes itself carry them too: a 504 when the
  // service is too slow, and a WebSocket API's 101.
  auto timed_out = curl({url("limited-slow", "/slow?ms=3000")}, 20s);
  EXPECT_EQ(timed_out.status, 504) << timed_out.body;
  EXPECT_EQ(timed_out.header("ratelimit-limit"), "5") << timed_out.headers;
  EXPECT_EQ(timed_out.header("ratelimit-remaining"), "4") << timed_out.headers;
  auto upgraded = curl({"-H", "Connection: Upgrade", "-H", "Upgrade: websocket", "-H", "Sec-WebSocket-Version: 13",
                        "-H", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", url("limited-ws", "/")},
                       2s);
  EXPECT_EQ(upgraded.status, 101) << upgraded.headers;
  EXPECT_EQ(upgraded.header("ratelimit-limit"), "5") << upgraded.headers;
  EXPECT_EQ(upgraded.header("ratelimit-remaining"), "4") << upgraded.headers;

  // Concurrency: one at a time; the second while the first runs gets 503.
  CurlResult slow;
  std::jthread t([&] { slow = curl({url("concurrent", "/slow?ms=1500")}, 20s); });
  // The slow request holds the slot for 1.5 s: send the second once the
  // first has passed the edge's policies and reached the broker (a loaded
  // machine may take a while to start curl, and a request merely read by
  // the edge holds no slot yet).
  ASSERT_TRUE(wait_until(
      [&] { return metric_value(scrape(sys.broker_admin_port), "postern_broker_exchanges_in_flight", {}) >= 1; }, 5s));
  auto busy = curl({url("concurrent")});
  EXPECT_EQ(busy.status, 503) << busy.body;
  EXPECT_EQ(busy.header("retry-after"), "2");
  t.join();
  EXPECT_EQ(slow.status, 200);
  EXPECT_EQ(curl({url("concurrent")}).status, 200) << "the slot is free again";

  // Threat protection.
  EXPECT_EQ(curl({url("guarded", "/headers?" + std::string(120, 'a'))}).status, 414);
  EXPECT_EQ(curl({url("open", "/headers?" + std::string(320, 'a'))}).status, 414) << "global limit";
  EXPECT_EQ(curl({url("open", "/headers?" + std::string(120, 'a'))}).status, 200);
  std::vector<std::string> many{url("guarded")};
  for (int i = 0; i < 15; ++i) many.insert(many.begin(), {"-H", "X-Extra-" + std::to_string(i) + ": v"});
  EXPECT_EQ(curl(many).status, 431);
  EXPECT_EQ(curl({"-H", "X-Big: " + std::string(2500, 'b'), url("guarded")}).status, 431);
  EXPECT_EQ(curl({"--data-binary", std::string(1500, 'x'), url("guarded", "/echo")}).status, 413);
  EXPECT_EQ(curl({"-H", "Transfer-Encoding: chunked", "--data-binary", std::string(1500, 'x'), url("guarded", "/echo")})
                .status,
            413);
  EXPECT_EQ(curl({"--data-binary", std::string(500, 'x'), url("guarded", "/echo")}).status, 200);
  EXPECT_EQ(curl({"-H", "Content-Type: application/json", "--data-binary", R"({"a":{"b":{"c":{"d":1}}}})",
                  url("guarded", "/echo")})
                .status,
            400);
  auto shallow = curl({"-H", "Content-Type: application/json", "--data-binary", R"({"a":{"b":[1,2]}})",
                       url("guarded", "/echo")});
  EXPECT_EQ(shallow.status, 200);
  EXPECT_EQ(shallow.body, R"({"a":{"b":[1,2]}})") << "a prefetched body is forwarded whole";
  EXPECT_EQ(curl({url("denied")}).status, 403);
  // Report-only: passes, and is counted.
  EXPECT_EQ(curl({url("reported", "/headers?" + std::string(50, 'r'))}).status, 200);

  // Every decision is counted.
  const auto m = scrape(sys.edge_admin_port);
  auto decisions = [&](const std::map<std::string, std::string>& labels) {
    return metric_value(m, "postern_edge_policy_decisions_total", labels);
  };
  EXPECT_GE(decisions({{"api", "keyed"}, {"outcome", "rejected"}, {"reason", "missing_credential"}}), 1);
  EXPECT_GE(decisions({{"api", "keyed"}, {"outcome", "rejected"}, {"reason", "invalid_credential"}}), 1);
  EXPECT_GE(decisions({{"api", "keyed"}, {"outcome", "rejected"}, {"reason", "not_authorized"}}), 1);
  EXPECT_GE(decisions({{"api", "keyed"}, {"policy", "identify"}, {"outcome", "allowed"}}), 1);
  EXPECT_EQ(decisions({{"api", "limited"}, {"outcome", "rejected"}, {"reason", "rate_limited"}}), 1);
  EXPECT_EQ(decisions({{"api", "concurrent"}, {"outcome", "rejected"}, {"reason", "concurrency_limit"}}), 1);
  EXPECT_GE(decisions({{"api", "guarded"}, {"outcome", "rejected"}, {"reason", "json_too_deep"}}), 1);
  EXPECT_GE(decisions({{"api", "guarded"}, {"outcome", "rejected"}, {"reason", "body_too_large"}}), 2);
  EXPECT_EQ(decisions({{"api", "reported"}, {"outcome", "reported"}, {"reason", "url_too_long"}}), 1);
  EXPECT_EQ(decisions({{"api", "denied"}, {"outcome", "rejected"}, {"reason", "ip_denied"}}), 1);
  EXPECT_GE(decisions({{"api", "open"}, {"policy", "threat_protection"}, {"outcome", "allowed"}}), 3);
  // The key is in no log line of any service.
  for (auto* p : {sys.edge.get(), sys.broker.get(), sys.connectors[0].get(), sys.demo.get(), sys.policy.get()}) {
    EXPECT_EQ(p->count_log(kAlphaKey), 0) << p->log_path();
  }
}

TEST_F(Policies, KeyInTheQueryNeverReachesTheNativeService) {
  start(kPolicies);
  auto r = curl({url("keyed", "/headers?a=1&x-Gateway-APIKey=" + std::string(kAlphaKey) + "&b=2")});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body.find(kAlphaKey), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("\"target\":\"/headers?a=1&b=2\""), std::string::npos) << r.body;
  EXPECT_EQ(sys.edge->count_log(kAlphaKey), 0);
}

TEST_F(Policies, HeaderAndQueryTransformation) {
  start(kPolicies);
  auto r = curl({"-H", "X-Drop: d", "-H", "X-Old: o", url("mediated", "/headers?secret=s&keep=k")});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_NE(r.body.find(R"(["X-Added","yes-added"])"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find(R"(["X-New","o"])"), std::string::npos) << r.body;
  EXPECT_EQ(r.body.find("X-Drop"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find(R"("target":"/headers?keep=k&extra=1")"), std::string::npos) << r.body;
  EXPECT_EQ(r.header("x-gateway-mediated"), "true");
}

TEST_F(Policies, FileEditReachesTheEdgeWithinTwoSecondsAndABadEditIsRejected) {
  start(kPolicies);
  ASSERT_EQ(curl({url("open")}).status, 200);

  // Lock the open API: the edit must change what the edge does, no restart.
  std::string locked = kPolicies;
  locked.replace(locked.find(R"(  - {name: open, version: "1.0", routing: "apigateway://demo/", allow_overlap: true})"),
                 std::string(R"(  - {name: open, version: "1.0", routing: "apigateway://demo/", allow_overlap: true})").size(),
                 "  - {name: open, version: \"1.0\", routing: \"apigateway://demo/\", policies: {identify: "
                 "{identifiers: [API_KEY]}}}");
  // A second edge replica on the same broker: every edge must follow.
  auto edge2 = Process::start({binary_path("postern-edge"), "--config", sys.dir().file("edge.yaml")},
                              sys.dir().file("edge-2.log"));
  const auto edge2_port = edge2->wait_for_port("external");
  edge2->wait_for_log("\"msg\":\"policy snapshot applied\"");
  const std::string url2 = "http://127.0.0.1:" + std::to_string(edge2_port) + "/gateway/open/1.0/headers";
  ASSERT_EQ(curl({url2}).status, 200);

  const auto t0 = std::chrono::steady_clock::now();
  sys.write_policy(locked);
  ASSERT_TRUE(wait_until([&] { return curl({url("open")}).status == 401; }, 5s));
  const auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_TRUE(wait_until([&] { return curl({url2}).status == 401; }, 5s));
  const auto took2 = std::chrono::steady_clock::now() - t0;
  const auto ms = [](auto d) { return std::chrono::duration_cast<std::chrono::milliseconds>(d).count(); };
  std::printf("policy edit reached edge 1 in %lld ms, edge 2 in %lld ms\n", static_cast<long long>(ms(took)),
              static_cast<long long>(ms(took2)));
  EXPECT_LT(took, 2s) << ms(took) << " ms";
  EXPECT_LT(took2, 2s) << ms(took2) << " ms";
  EXPECT_EQ(curl({"-H", std::string("x-Gateway-APIKey: ") + kBetaKey, url("open")}).status, 200);
  // The policy service says what the edit changed, and when it last took one.
  const auto changes = sys.policy->wait_for_log("\"msg\":\"policy changes\"", 5s);
  EXPECT_NE(changes.find("\"apis_changed\":\"open/1.0\""), std::string::npos) << changes;
  EXPECT_NE(changes.find("\"apis_added\":\"\""), std::string::npos) << changes;
  const double reloaded =
      metric_value(scrape(sys.policy_admin_port), "postern_policy_last_reload_success_timestamp_seconds");
  const double now_s = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  EXPECT_GT(reloaded, now_s - 30);
  EXPECT_LE(reloaded, now_s + 1);

  // An invalid edit: rejected with file, line and field; the last good
  // version keeps serving everywhere.
  std::string broken = locked;
  broken += "  - {name: bad, ip_ranges: [10.0.0.0/33], apis: [open]}\n";
  sys.write_policy(broken);
  const auto line = sys.policy->wait_for_log("policy file rejected", 10s);
  EXPECT_NE(line.find("policy.yaml:"), std::string::npos) << line;
  EXPECT_NE(line.find("applications[2].ip_ranges[0]"), std::string::npos) << line;
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(curl({url("open")}).status, 401);
  EXPECT_EQ(curl({"-H", std::string("x-Gateway-APIKey: ") + kBetaKey, url("open")}).status, 200);
  EXPECT_GE(metric_value(scrape(sys.policy_admin_port), "postern_policy_reloads_total", {{"result", "rejected"}}), 1);

  // A restarted edge gets the current snapshot from the broker before it
  // reports ready.
  sys.edge.reset();
  sys.start_edge();
  EXPECT_EQ(curl({url("open")}).status, 401);
}

// A ConfigMap mounted as a directory is updated by swapping a symlink
// (`..data` -> a new timestamped directory); the file name the service reads
// never changes. That swap alone must reload the policy.
TEST_F(Policies, ConfigMapSymlinkSwapIsAHotReload) {
  namespace fs = std::filesystem;
  const fs::path cm = sys.dir().file("configmap");
  fs::create_directories(cm / "..2026_11_23_v1");
  write_file((cm / "..2026_11_23_v1" / "policy.yaml").string(), kPolicies);
  fs::create_symlink("..2026_11_23_v1", cm / "..data");
  fs::create_symlink("..data/policy.yaml", cm / "policy.yaml");
  fs::create_directories(sys.dir().file("configmap/keys"));
  write_file((cm / "keys" / "alpha").string(), kAlphaKey);
  write_file((cm / "keys" / "beta").string(), kBetaKey);
  sys.policy_path_override = (cm / "policy.yaml").string();
  start(kPolicies);
  ASSERT_EQ(curl({url("open")}).status, 200);

  std::string locked = kPolicies;
  const std::string open_api = R"(  - {name: open, version: "1.0", routing: "apigateway://demo/", allow_overlap: true})";
  locked.replace(locked.find(open_api), open_api.size(),
                 "  - {name: open, version: \"1.0\", routing: \"apigateway://demo/\", policies: {identify: "
                 "{identifiers: [API_KEY]}}}");
  fs::create_directories(cm / "..2026_11_23_v2");
  write_file((cm / "..2026_11_23_v2" / "policy.yaml").string(), locked);
  fs::create_symlink("..2026_11_23_v2", cm / "..data_tmp");
  fs::rename(cm / "..data_tmp", cm / "..data");  // atomic, as kubelet does it
  EXPECT_TRUE(wait_until([&] { return curl({url("open")}).status == 401; }, 2s));
}

TEST_F(Policies, Scenario2PoliciesEnforcedInTheGreenZone) {
  start(R"(apis:
  - name: inside
    version: "1.0"
    routing: apigateway://demo/
    allow_overlap: true
    enforcement: GREEN
    policies:
      identify: {identifiers: [API_KEY]}
      transform:
        request_headers: {add: {X-Checked-By: connector}}
      log_invocation: {}
applications:
  - name: alpha
    api_keys: [{key_file: keys/alpha}]
    apis: [inside]
)",
        "invocation_log_file: \"" + sys.dir().file("edge-invocations.log") + "\"\n");
  auto none = curl({url("inside")});
  EXPECT_EQ(none.status, 401) << none.body;
  EXPECT_NE(none.header("www-authenticate").find("APIKey"), std::string::npos);
  auto good = curl({url("inside", "/headers?x-Gateway-APIKey=" + std::string(kAlphaKey))});
  EXPECT_EQ(good.status, 200) << good.body;
  EXPECT_EQ(good.body.find(kAlphaKey), std::string::npos) << good.body;
  EXPECT_NE(good.body.find(R"(["X-Checked-By","connector"])"), std::string::npos) << good.body;
  // The connector decided, not the edge.
  const auto cm = scrape(static_cast<std::uint16_t>(sys.connectors[0]->wait_for_port("admin")));
  EXPECT_EQ(metric_value(cm, "postern_connector_policy_decisions_total",
                         {{"api", "inside"}, {"outcome", "rejected"}, {"reason", "missing_credential"}}),
            1);
  EXPECT_EQ(metric_value(scrape(sys.edge_admin_port), "postern_edge_policy_decisions_total",
                         {{"api", "inside"}, {"policy", "identify"}}),
            0);
  sys.connectors[0]->wait_for_log("\"msg\":\"invocation\".*\"enforced_by\":\"connector\"");
  EXPECT_EQ(sys.connectors[0]->count_log(kAlphaKey), 0);
}

TEST_F(Policies, LogInvocationStoresCompressedPayloadsThatDecode) {
  const std::string log_file = sys.dir().file("invocations.log");
  start(R"(apis:
  - name: logged
    version: "1.0"
    routing: apigateway://demo/
    allow_overlap: true
    policies:
      identify: {identifiers: [API_KEY]}
      log_invocation: {store_request_payload: true, store_response_payload: true, compress_payload: true}
applications:
  - name: alpha
    api_keys: [{key_file: keys/alpha}]
    apis: [logged]
)",
        "invocation_log_file: \"" + log_file + "\"\n");
  const std::string payload = "{\"order\":42,\"items\":[\"a\",\"b\"],\"note\":\"" + std::string(3000, 'z') + "\"}";
  auto r = curl({"-H", std::string("x-Gateway-APIKey: ") + kAlphaKey, "--data-binary", payload,
                 url("logged", "/echo?x=1")});
  ASSERT_EQ(r.status, 200);
  ASSERT_EQ(r.body, payload);
  ASSERT_TRUE(wait_until([&] { return read_file(log_file).find("\"invocation\"") != std::string::npos; }, 5s));
  const std::string rec = read_file(log_file);
  EXPECT_EQ(rec.find(kAlphaKey), std::string::npos) << rec;
  EXPECT_NE(rec.find("\"application\":\"alpha\""), std::string::npos) << rec;
  EXPECT_NE(rec.find("\"status\":200"), std::string::npos) << rec;
  EXPECT_NE(rec.find("\"path\":\"/gateway/logged/1.0/echo\""), std::string::npos) << rec;
  EXPECT_NE(rec.find("\"native_ms\":"), std::string::npos) << rec;
  EXPECT_NE(rec.find("\"tunnel_ms\":"), std::string::npos) << rec;
  // Both payloads decode (base64, gunzip) to the bytes that crossed.
  write_file(sys.dir().file("record.json"), rec);
  for (const char* which : {"request_payload", "response_payload"}) {
    auto decoded = run_command(
        {"python3", "-c",
         "import base64,gzip,json,sys\n"
         "r=json.loads(open(sys.argv[1]).readline())[sys.argv[2]]\n"
         "assert r['encoding']=='gzip+base64', r['encoding']\n"
         "sys.stdout.write(gzip.decompress(base64.b64decode(r['data'])).decode())\n",
         sys.dir().file("record.json"), which});
    EXPECT_EQ(decoded.exit_code, 0) << decoded.err;
    EXPECT_EQ(decoded.out, payload) << which;
  }
  // The record went to stdout too.
  EXPECT_EQ(sys.edge->count_log("\"msg\":\"invocation\""), 1);
}

TEST_F(Policies, WatchOverMutualTlsInsideTheGreenZone) {
  sys.policy_tls = true;
  start(kPolicies);
  EXPECT_EQ(curl({url("keyed")}).status, 401) << "the snapshot arrived over TLS";
  EXPECT_EQ(sys.policy->count_log("\"msg\":\"watcher connected\""), 1);
  // A connector without a client certificate gets nothing.
  const std::string plain = sys.dir().file("plain-watch.yaml");
  std::string cfg = read_file(sys.dir().file("connector-1.yaml"));
  const std::string client_cert = ", cert_file: \"" + sys.certs().connector_crt + "\", key_file: \"" +
                                  sys.certs().connector_key + "\", server_name";
  ASSERT_NE(cfg.find(client_cert), std::string::npos) << cfg;
  cfg.replace(cfg.find(client_cert), client_cert.size(), ", server_name");
  cfg.replace(cfg.find("id: connector-1"), 15, "id: connector-2");
  write_file(plain, cfg);
  auto c2 = Process::start({binary_path("postern-connector"), "--config", plain}, sys.dir().file("connector-2.log"));
  c2->wait_for_log("snapshot stream ended, reconnecting");
  EXPECT_EQ(c2->count_log("\"msg\":\"policy snapshot applied\""), 0);
}

TEST_F(Policies, AdminListsApisAndApplicationsWithoutKeyMaterial) {
  start(kPolicies);
  const std::string admin = "http://127.0.0.1:" + std::to_string(sys.policy_admin_port);
  auto apis = curl({admin + "/apis"});
  EXPECT_EQ(apis.status, 200);
  EXPECT_EQ(apis.header("content-type"), "application/json");
  EXPECT_NE(apis.body.find("\"name\":\"keyed\""), std::string::npos) << apis.body;
  EXPECT_NE(apis.body.find("\"resolved_base_path\":\"/gateway/keyed/1.0\""), std::string::npos) << apis.body;
  // As the file writes them: short enum names, no empty blocks.
  EXPECT_NE(apis.body.find("\"identifiers\":[\"API_KEY\"]"), std::string::npos) << apis.body;
  EXPECT_EQ(apis.body.find("IDENTIFIER_TYPE"), std::string::npos) << apis.body;
  EXPECT_EQ(apis.body.find("{}"), std::string::npos) << apis.body;
  auto apps = curl({admin + "/applications"});
  EXPECT_EQ(apps.status, 200);
  EXPECT_NE(apps.body.find("\"name\":\"alpha\""), std::string::npos) << apps.body;
  EXPECT_NE(apps.body.find("\"api_keys\":1"), std::string::npos) << apps.body;
  EXPECT_NE(apps.body.find("\"basic_users\":[\"alice\"]"), std::string::npos) << apps.body;
  for (const auto& body : {apis.body, apps.body}) {
    EXPECT_EQ(body.find(kAlphaKey), std::string::npos);
    EXPECT_EQ(body.find("5e884898"), std::string::npos) << "a password hash is listed";
    EXPECT_EQ(body.find("sha256"), std::string::npos) << "key hashes are listed";
  }
}

TEST(PolicyValidate, CatchesCommonMistakesWithFileLineAndField) {
  TempDir dir("postern-validate");
  write_file(dir.file("good.yaml"), kPolicies);
  std::filesystem::create_directories(dir.file("keys"));
  write_file(dir.file("keys/alpha"), kAlphaKey);
  write_file(dir.file("keys/beta"), kBetaKey);
  auto ok = run_command({binary_path("postern-policy"), "validate", dir.file("good.yaml")});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_NE(ok.out.find("ok (11 APIs, 2 applications)"), std::string::npos) << ok.out;

  struct Case {
    const char* yaml;
    const char* expect;
  } cases[] = {
      {"apis:\n  - {name: a, routing: \"apigateway://x/\", colour: blue}\n",
       ":2:43: apis[0].colour: unknown field 'colour'"},
      {"apis:\n  - name: a\n    routing: apigateway://x/\n    policies:\n      threat_protection:\n"
       "        ip_deny: {cidrs: [10.1.0.0/33]}\n",
       ":6:27: apis[0].policies.threat_protection.ip_deny.cidrs[0]: '10.1.0.0/33'"},
      {"apis:\n  - {name: a, base_path: /x, routing: \"apigateway://x/\"}\n"
       "  - {name: b, base_path: /x/, routing: \"apigateway://y/\"}\n",
       ":3:15: apis[1].base_path: '/x' is already used by API 'a'"},
      {"apis:\n  - {name: a, routing: \"RegPortAlias/rest\"}\n",
       ":2:15: apis[0].routing: 'RegPortAlias/rest' has no scheme"},
  };
  for (const auto& c : cases) {
    write_file(dir.file("bad.yaml"), c.yaml);
    auto r = run_command({binary_path("postern-policy"), "validate", dir.file("bad.yaml")});
    EXPECT_EQ(r.exit_code, 1) << c.yaml;
    EXPECT_NE(r.err.find(dir.file("bad.yaml") + c.expect), std::string::npos) << "expected: " << c.expect << "\n"
                                                                                 << r.err;
  }
}

}  // namespace
}  // namespace postern::testing

namespace postern::testing {
namespace {

// An identity provider in a few lines: an RSA key from openssl, its JWKS, and
// RS256 tokens signed with `openssl dgst`.
const char* kMintTokens = R"(import base64, json, subprocess, sys, time
d = sys.argv[1]
def b64(b): return base64.urlsafe_b64encode(b).rstrip(b'=').decode()
subprocess.run(['openssl', 'genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', d + '/idp.pem'],
               check=True, capture_output=True)
mod = subprocess.run(['openssl', 'rsa', '-in', d + '/idp.pem', '-noout', '-modulus'], check=True,
                     capture_output=True, text=True).stdout.strip().split('=')[1]
json.dump({'keys': [{'kty': 'RSA', 'kid': 'k1', 'alg': 'RS256', 'use': 'sig', 'n': b64(bytes.fromhex(mod)), 'e': 'AQAB'}]},
          open(d + '/jwks.json', 'w'))
def token(claims):
    head = b64(json.dumps({'alg': 'RS256', 'kid': 'k1', 'typ': 'JWT'}).encode())
    body = b64(json.dumps(claims).encode())
    sig = subprocess.run(['openssl', 'dgst', '-sha256', '-sign', d + '/idp.pem'], input=(head + '.' + body).encode(),
                         check=True, capture_output=True).stdout
    return head + '.' + body + '.' + b64(sig)
now = int(time.time())
base = {'sub': 'svc-a', 'iss': 'https://idp.test', 'aud': 'postern', 'exp': now + 300}
for name, claims in [('valid', base), ('expired', dict(base, exp=now - 600)), ('wrong_aud', dict(base, aud='other')),
                     ('stranger', dict(base, sub='svc-unknown'))]:
    open(d + '/' + name + '.jwt', 'w').write(token(claims))
)";

TEST(PoliciesJwt, BearerTokensFromAJwksFile) {
  System sys;
  auto mint = run_command({"python3", "-c", kMintTokens, sys.dir().path()});
  ASSERT_EQ(mint.exit_code, 0) << mint.err;
  sys.start_demo();
  sys.start_policy(R"(apis:
  - name: jwt
    version: "1.0"
    routing: apigateway://demo/
    allow_overlap: true
    policies:
      identify:
        identifiers: [JWT]
        jwt: {jwks_file: jwks.json, issuer: "https://idp.test", audiences: [postern]}
applications:
  - {name: service-a, jwt_subjects: [svc-a], apis: [jwt]}
)");
  sys.start_broker();
  sys.start_connector();
  sys.start_edge();
  const std::string u = sys.edge_url("/gateway/jwt/1.0/headers");
  auto bearer = [&](const char* name) {
    return curl({"-H", "Authorization: Bearer " + read_file(sys.dir().file(std::string(name) + ".jwt")), u});
  };
  EXPECT_EQ(bearer("valid").status, 200);
  auto none = curl({u});
  EXPECT_EQ(none.status, 401);
  EXPECT_NE(none.header("www-authenticate").find("Bearer realm=\"postern\""), std::string::npos) << none.headers;
  auto expired = bearer("expired");
  EXPECT_EQ(expired.status, 401);
  EXPECT_NE(expired.header("www-authenticate").find("error=\"invalid_token\""), std::string::npos) << expired.headers;
  EXPECT_NE(expired.header("www-authenticate").find("expired"), std::string::npos) << expired.headers;
  EXPECT_EQ(bearer("wrong_aud").status, 401);
  EXPECT_EQ(bearer("stranger").status, 401);
  // The JWKS reached the edge inside the snapshot: the edge has no file.
  EXPECT_EQ(read_file(sys.dir().file("edge.yaml")).find("jwks"), std::string::npos);
}

}  // namespace
}  // namespace postern::testing
