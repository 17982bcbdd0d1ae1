// End to end: client -> edge -> broker -> connector (dialled out, mTLS) ->
// demo native service, with real binaries and curl.

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <regex>
#include <thread>

#include "support/http.hpp"
#include "support/load.hpp"
#include "support/sockets.hpp"
#include "support/system.hpp"

namespace postern::testing {
namespace {

using namespace std::chrono_literals;

class ReverseInvoke : public ::testing::Test {
 protected:
  System sys;

  // Polls the broker until an exchange is spliced onto a connector.
  void wait_exchange_in_flight() {
    const auto until = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < until) {
      if (metric_value(scrape(sys.broker_admin_port), "postern_broker_exchanges_in_flight") >= 1.0) return;
      std::this_thread::sleep_for(10ms);
    }
    FAIL() << "no exchange reached the connector";
  }
};

TEST_F(ReverseInvoke, GetSmallAndEmptyBodies) {
  sys.start_all();
  auto r = curl({sys.edge_url("/gateway/demo/1.0/")});
  EXPECT_EQ(r.status, 200) << r.stderr_text;
  EXPECT_EQ(r.body, "Hello from the Postern demo native service\n");

  auto empty = curl({sys.edge_url("/gateway/demo/1.0/bytes/0")});
  EXPECT_EQ(empty.status, 200);
  EXPECT_EQ(empty.body, "");
  EXPECT_EQ(empty.header("content-length"), "0");

  auto post0 = curl({"-X", "POST", "--data-binary", "", sys.edge_url("/gateway/demo/1.0/echo")});
  EXPECT_EQ(post0.status, 200);
  EXPECT_EQ(post0.body, "");
}

TEST_F(ReverseInvoke, OneMebibyteBothWays) {
  sys.start_all();
  const std::string file = sys.dir().file("1m.bin");
  const std::string sha = make_pattern_file(file, 1 << 20);

  auto down = curl({sys.edge_url("/gateway/demo/1.0/bytes/1048576")});
  ASSERT_EQ(down.status, 200);
  EXPECT_EQ(down.body.size(), 1u << 20);
  EXPECT_EQ(sha256_hex(down.body), sha);
  EXPECT_EQ(down.header("x-demo-sha256"), sha);

  auto up = curl({"-X", "POST", "--data-binary", "@" + file, sys.edge_url("/gateway/demo/1.0/sink")});
  ASSERT_EQ(up.status, 200) << up.body;
  EXPECT_NE(up.body.find("\"bytes\":1048576"), std::string::npos) << up.body;
  EXPECT_NE(up.body.find(sha), std::string::npos) << up.body;

  auto echo = curl({"-X", "PUT", "--data-binary", "@" + file, "-H", "Content-Type: application/x-test",
                    sys.edge_url("/gateway/demo/1.0/echo")});
  ASSERT_EQ(echo.status, 200);
  EXPECT_EQ(sha256_hex(echo.body), sha);
  EXPECT_EQ(echo.header("content-type"), "application/x-test");
  EXPECT_EQ(echo.header("x-demo-method"), "PUT");
}

TEST_F(ReverseInvoke, ChunkedUploadAndChunkedDownload) {
  sys.start_all();
  const std::string file = sys.dir().file("300k.bin");
  const std::string sha = make_pattern_file(file, 300000);
  auto up = curl({"-X", "POST", "-H", "Transfer-Encoding: chunked", "--data-binary", "@" + file,
                  sys.edge_url("/gateway/demo/1.0/sink")});
  ASSERT_EQ(up.status, 200) << up.body;
  EXPECT_NE(up.body.find("\"bytes\":300000"), std::string::npos) << up.body;
  EXPECT_NE(up.body.find(sha), std::string::npos);

  auto down = curl({sys.edge_url("/gateway/demo/1.0/bytes/300000?chunked=1")});
  ASSERT_EQ(down.status, 200);
  EXPECT_EQ(down.header("transfer-encoding"), "chunked");
  EXPECT_EQ(sha256_hex(down.body), sha);
}

// 200 MiB each way, streamed: no service may hold the body in memory. What
// a hop may hold is bounded by the broker's response_window (downloads) and
// gRPC's receive windows, which grow with a bandwidth-delay estimate that a
// shared CPU inflates, so this test runs alone (RUN_SERIAL).
TEST_F(ReverseInvoke, TwoHundredMebibytesStreamWithBoundedMemory) {
  sys.start_all();
  constexpr std::uint64_t kSize = 200ull << 20;
  const std::string file = sys.dir().file("200m.bin");
  const std::string sha = make_pattern_file(file, kSize);

  const std::string out = sys.dir().file("200m.out");
  auto down = curl({sys.edge_url("/gateway/demo/1.0/bytes/" + std::to_string(kSize))}, 120s, out);
  ASSERT_EQ(down.status, 200) << down.stderr_text;
  EXPECT_EQ(sha256_file_hex(out), sha);

  auto up = curl({"-X", "POST", "--data-binary", "@" + file, sys.edge_url("/gateway/demo/1.0/sink")}, 120s);
  ASSERT_EQ(up.status, 200) << up.body << up.stderr_text;
  EXPECT_NE(up.body.find(sha), std::string::npos) << up.body;

  auto chunked = curl({"-X", "POST", "-H", "Transfer-Encoding: chunked", "--data-binary", "@" + file,
                       sys.edge_url("/gateway/demo/1.0/sink")},
                      120s);
  ASSERT_EQ(chunked.status, 200) << chunked.body;
  EXPECT_NE(chunked.body.find(sha), std::string::npos) << chunked.body;

  // Peak RSS of every hop stays far below the 200 MiB body.
#ifdef POSTERN_SANITIZED
  GTEST_SKIP() << "the bodies crossed intact; peak RSS is not a measure under AddressSanitizer (the release run checks it)";
#endif
  for (Process* p : {sys.edge.get(), sys.broker.get(), sys.connectors[0].get(), sys.demo.get()}) {
    const long peak_kib = p->peak_rss_kib();
    EXPECT_GT(peak_kib, 0);
    EXPECT_LT(peak_kib, 64 * 1024) << p->argv()[0] << " peaked at " << peak_kib << " KiB";
    std::printf("[ info ] %s peak RSS %ld KiB\n", p->argv()[0].c_str(), peak_kib);
  }
}

TEST_F(ReverseInvoke, StatusHeadersAndForwardingPassThrough) {
  sys.start_all();
  auto created = curl({sys.edge_url("/gateway/demo/1.0/status/201")});
  EXPECT_EQ(created.status, 201);
  EXPECT_EQ(created.header("x-demo-status"), "201");
  auto teapot = curl({sys.edge_url("/gateway/demo/1.0/status/418")});
  EXPECT_EQ(teapot.status, 418);
  EXPECT_EQ(teapot.body, "status 418\n");
  auto nocontent = curl({sys.edge_url("/gateway/demo/1.0/status/204")});
  EXPECT_EQ(nocontent.status, 204);

  auto multi = curl({sys.edge_url("/gateway/demo/1.0/multi")});
  EXPECT_EQ(multi.status, 200);
  EXPECT_EQ(multi.header_values("set-cookie"), (std::vector<std::string>{"a=1", "b=2"}));
  EXPECT_EQ(multi.header_values("x-custom"), (std::vector<std::string>{"one", "two"}));
  EXPECT_EQ(multi.header("cache-control"), "no-store");
  EXPECT_FALSE(multi.header("x-request-id").empty());

  auto head = curl({"-I", sys.edge_url("/gateway/demo/1.0/bytes/1000")});
  EXPECT_EQ(head.status, 200);
  EXPECT_EQ(head.header("content-length"), "1000");

  // What the native service saw: forwarding headers (the edge's own: a
  // client that is no trusted proxy cannot add to them, see
  // Security.ForwardingHeadersComeFromTheEdge), no hop-by-hop headers, the
  // client's request id kept, the target rewritten below the alias.
  auto seen = curl({"-H", "X-Request-Id: client-id-123", "-H", "Connection: keep-alive, X-Hop", "-H", "X-Hop: secret",
                    "-H", "X-Forwarded-For: 203.0.113.7", sys.edge_url("/gateway/demo/1.0/headers?q=1")});
  ASSERT_EQ(seen.status, 200);
  EXPECT_NE(seen.body.find("\"target\":\"/headers?q=1\""), std::string::npos) << seen.body;
  EXPECT_NE(seen.body.find("[\"X-Forwarded-For\",\"127.0.0.1\"]"), std::string::npos) << seen.body;
  EXPECT_EQ(seen.body.find("203.0.113.7"), std::string::npos) << seen.body;
  EXPECT_NE(seen.body.find("[\"X-Forwarded-Proto\",\"http\"]"), std::string::npos) << seen.body;
  EXPECT_NE(seen.body.find("[\"Forwarded\",\"for=127.0.0.1;proto=http;host=\\\"127.0.0.1:"), std::string::npos)
      << seen.body;
  EXPECT_NE(seen.body.find("[\"X-Request-Id\",\"client-id-123\"]"), std::string::npos) << seen.body;
  EXPECT_EQ(seen.body.find("X-Hop"), std::string::npos) << seen.body;
  EXPECT_EQ(seen.header("x-request-id"), "client-id-123");
}

// A native service's redirect and cookie name its own URL (host, port,
// path); the client sees the API's public base path instead, on the
// reverse-invoke path (the connector rewrites) and for a DMZ-local upstream
// (the edge does). Per API: off, and preserve_host.
TEST_F(ReverseInvoke, RedirectsAndCookiesNameThePublicPathNotTheNativeHost) {
  sys.start_demo();
  sys.start_policy("apis:\n"
                   "  - {name: demo, version: \"1.0\", routing: \"apigateway://demo/\"}\n"
                   "  - {name: kept, version: \"1.0\", routing: \"apigateway://demo/\", allow_overlap: true,\n"
                   "     response_rewrite: {off: true}}\n"
                   "  - {name: host, version: \"1.0\", routing: \"apigateway://demo/\", allow_overlap: true,\n"
                   "     preserve_host: true}\n"
                   "  - {name: local, version: \"1.0\", routing: \"" + sys.demo_url("") + "\"}\n");
  sys.start_broker();
  sys.start_connector();
  sys.start_edge();
  const std::string native = "127.0.0.1:" + std::to_string(sys.demo_port);

  auto r = curl({sys.edge_url("/gateway/demo/1.0/redirect")});
  EXPECT_EQ(r.status, 302) << r.headers;
  EXPECT_EQ(r.header("location"), "/gateway/demo/1.0/login?next=%2F");
  EXPECT_EQ(r.header("content-location"), "/gateway/demo/1.0/redirect");
  EXPECT_EQ(r.header("set-cookie"), "session=demo; Path=/gateway/demo/1.0; HttpOnly");
  EXPECT_EQ(r.headers.find(native), std::string::npos) << r.headers;

  auto local = curl({sys.edge_url("/gateway/local/1.0/redirect")});
  EXPECT_EQ(local.status, 302) << local.headers;
  EXPECT_EQ(local.header("location"), "/gateway/local/1.0/login?next=%2F");
  EXPECT_EQ(local.header("set-cookie"), "session=demo; Path=/gateway/local/1.0; HttpOnly");

  auto kept = curl({sys.edge_url("/gateway/kept/1.0/redirect")});
  EXPECT_EQ(kept.header("location"), "http://" + native + "/login?next=%2F");
  EXPECT_EQ(kept.header("set-cookie"), "session=demo; Domain=127.0.0.1; Path=/; HttpOnly");

  // The Host the native service sees: its own, or the client's.
  auto own = curl({sys.edge_url("/gateway/demo/1.0/headers")});
  EXPECT_NE(own.body.find("[\"Host\",\"" + native + "\"]"), std::string::npos) << own.body;
  auto client = curl({"-H", "Host: shop.example.com", sys.edge_url("/gateway/host/1.0/headers")});
  EXPECT_NE(client.body.find("[\"Host\",\"shop.example.com\"]"), std::string::npos) << client.body;
}

// CORS at the edge: a preflight is answered there (it never reaches the
// native service), answers to an allowed origin carry the allowance (also
// a refusal, so a script can read it), other origins get none.
TEST_F(ReverseInvoke, CorsPreflightAnsweredAtTheEdgeAndAllowanceOnAnswers) {
  sys.start_demo();
  sys.start_policy("apis:\n"
                   "  - name: demo\n    version: \"1.0\"\n    routing: \"apigateway://demo/\"\n"
                   "    policies:\n"
                   "      identify: {identifiers: [API_KEY]}\n"
                   "      cors:\n"
                   "        allowed_origins: [\"https://app.example.com\"]\n"
                   "        allowed_methods: [GET, PUT]\n"
                   "        allowed_headers: [X-Gateway-APIKey, Content-Type]\n"
                   "        exposed_headers: [X-Request-Id]\n"
                   "        allow_credentials: true\n"
                   "        max_age: 5m\n"
                   "applications:\n"
                   "  - {name: app, apis: [demo], api_keys: [{sha256: "
                   "\"66f81693e7e835e2bbca0a5dd0dddcc8466fb92743c58edd8a38542bfaac6966\"}]}\n");
  sys.start_broker();
  sys.start_connector();
  sys.start_edge();
  const std::string origin = "Origin: https://app.example.com";

  auto pre = curl({"-X", "OPTIONS", "-H", origin, "-H", "Access-Control-Request-Method: PUT", "-H",
                   "Access-Control-Request-Headers: x-gateway-apikey, content-type", sys.edge_url("/gateway/demo/1.0/echo")});
  EXPECT_EQ(pre.status, 204) << pre.headers << pre.body;
  EXPECT_EQ(pre.header("access-control-allow-origin"), "https://app.example.com");
  EXPECT_EQ(pre.header("access-control-allow-methods"), "GET, PUT");
  EXPECT_EQ(pre.header("access-control-allow-headers"), "x-gateway-apikey, content-type");
  EXPECT_EQ(pre.header("access-control-allow-credentials"), "true");
  EXPECT_EQ(pre.header("access-control-max-age"), "300");
  EXPECT_EQ(sys.demo->log().find("OPTIONS"), std::string::npos) << "a preflight reached the native service";

  auto denied = curl({"-X", "OPTIONS", "-H", "Origin: https://evil.example", "-H",
                      "Access-Control-Request-Method: GET", sys.edge_url("/gateway/demo/1.0/")});
  EXPECT_EQ(denied.status, 403);
  EXPECT_NE(denied.body.find("origin 'https://evil.example' is not allowed"), std::string::npos) << denied.body;
  EXPECT_TRUE(denied.header("access-control-allow-origin").empty());

  auto ok = curl({"-H", origin, "-H", "X-Gateway-APIKey: cors-key-0123456789", sys.edge_url("/gateway/demo/1.0/")});
  EXPECT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(ok.header("access-control-allow-origin"), "https://app.example.com");
  EXPECT_EQ(ok.header("access-control-expose-headers"), "X-Request-Id");
  EXPECT_EQ(ok.header("vary"), "Origin");
  auto refused = curl({"-H", origin, sys.edge_url("/gateway/demo/1.0/")});
  EXPECT_EQ(refused.status, 401);
  EXPECT_EQ(refused.header("access-control-allow-origin"), "https://app.example.com");
  auto other = curl({"-H", "Origin: https://evil.example", "-H", "X-Gateway-APIKey: cors-key-0123456789", sys.edge_url("/gateway/demo/1.0/")});
  EXPECT_EQ(other.status, 200);
  EXPECT_TRUE(other.header("access-control-allow-origin").empty());
}

TEST_F(ReverseInvoke, NoConfigYetIs503) {
  sys.start_demo();
  sys.start_broker();
  sys.start_edge();
  // No connector has attached since the broker started: the edge knows no
  // API yet, and says so rather than answering 404.
  auto r = curl({sys.edge_url("/gateway/demo/1.0/")});
  EXPECT_EQ(r.status, 503);
  EXPECT_NE(r.body.find("no-config"), std::string::npos) << r.body;
}

TEST_F(ReverseInvoke, NoConnectorIs503NamingTheApiThenRecovers) {
  sys.start_demo();
  sys.start_broker();
  sys.start_connector();
  sys.start_edge();
  // The broker keeps the snapshot when the last connector goes.
  sys.connectors.back()->signal(SIGKILL);
  sys.connectors.back()->wait(5s);
  sys.broker->wait_for_log("\"msg\":\"connector detached\"");
  auto r = curl({sys.edge_url("/gateway/demo/1.0/")});
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.header("content-type"), "application/problem+json");
  // The body names the API the client called, not the alias behind it.
  EXPECT_NE(r.body.find("\"api\":\"demo\""), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("no connector is attached for API 'demo'"), std::string::npos) << r.body;
  EXPECT_EQ(r.body.find("alias"), std::string::npos) << r.body;
  EXPECT_NE(r.header("proxy-status").find("error=destination_unavailable"), std::string::npos)
      << r.header("proxy-status");

  sys.start_connector({}, /*wait_attached=*/false);
  const auto t0 = std::chrono::steady_clock::now();
  int status = 0;
  while (std::chrono::steady_clock::now() - t0 < 10s) {
    status = curl({sys.edge_url("/gateway/demo/1.0/")}).status;
    if (status == 200) break;
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(status, 200);
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_LT(took, 2s) << "connector attach to first success took "
                      << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms";
}

TEST_F(ReverseInvoke, SlowNativeServiceIs504) {
  sys.start_demo();
  sys.start_broker();
  sys.start_connector({.aliases = {{"demo", sys.demo_url("")}, {"slow", sys.demo_url("")}}});
  sys.start_edge();
  auto r = curl({sys.edge_url("/gateway/slow/1.0/slow?ms=5000")}, 20s);
  EXPECT_EQ(r.status, 504) << r.body;
  EXPECT_EQ(r.header("content-type"), "application/problem+json");
  EXPECT_NE(r.header("proxy-status").find("http_response_timeout"), std::string::npos);
  // The path still works for a fast request afterwards.
  EXPECT_EQ(curl({sys.edge_url("/gateway/slow/1.0/slow?ms=10")}).status, 200);
}

TEST_F(ReverseInvoke, ConnectorKilledMidResponseIsNotAHang) {
  sys.start_all();
  // Before the response starts: 502.
  std::atomic<int> status{-1};
  std::jthread t([&] { status = curl({sys.edge_url("/gateway/demo/1.0/slow?ms=3000")}, 20s).status; });
  wait_exchange_in_flight();
  std::this_thread::sleep_for(100ms);
  sys.connectors[0]->signal(SIGKILL);
  const auto t0 = std::chrono::steady_clock::now();
  t.join();
  EXPECT_EQ(status.load(), 502);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);

  // Mid-body: the client sees a cut connection, not a complete response.
  sys.connectors.clear();
  sys.start_connector({.id = "connector-2"});
  CurlResult cut;
  std::jthread t2([&] { cut = curl({sys.edge_url("/gateway/demo/1.0/drip?chunks=100&ms=50")}, 20s); });
  wait_exchange_in_flight();
  std::this_thread::sleep_for(300ms);
  const auto t1 = std::chrono::steady_clock::now();
  sys.connectors[0]->signal(SIGKILL);
  t2.join();
  EXPECT_EQ(cut.status, 200);
  EXPECT_NE(cut.exit_code, 0) << "a truncated body must be an error for the client";
  EXPECT_LT(std::chrono::steady_clock::now() - t1, 2s);
}

TEST_F(ReverseInvoke, CertificateFromAnotherCaIsRefused) {
  sys.start_demo();
  sys.start_broker();
  auto& rogue = sys.start_connector(
      {.id = "rogue", .cert = sys.certs().rogue_connector_crt, .key = sys.certs().rogue_connector_key}, false);
  rogue.wait_for_log("\"msg\":\"attach failed\"", 15s);
  EXPECT_EQ(rogue.count_log("\"msg\":\"attached\""), 0);
  sys.start_edge();
  auto r = curl({sys.edge_url("/gateway/demo/1.0/")});
  EXPECT_EQ(r.status, 503);
}

TEST_F(ReverseInvoke, IdentityMayRegisterOnlyItsAliases) {
  sys.start_demo();
  sys.other_may_publish = true;  // the only connector here brings the config
  sys.start_broker();
  // connector-other may register "other" only; it asks for "demo" as well.
  auto& c = sys.start_connector({.id = "other",
                                 .cert = sys.certs().connector_other_crt,
                                 .key = sys.certs().connector_other_key,
                                 .aliases = {{"demo", sys.demo_url("")}, {"other", sys.demo_url("")}}},
                                false);
  auto line = c.wait_for_log("registration refused by broker", 15s);
  EXPECT_NE(line.find("may not register alias 'demo'"), std::string::npos) << line;
  sys.broker->wait_for_log("\"msg\":\"registration refused\".*\"alias\":\"demo\"");
  EXPECT_GE(metric_value(scrape(sys.broker_admin_port), "postern_broker_registration_refusals_total",
                         {{"reason", "alias_not_allowed"}}),
            1.0);

  // With only its own alias it attaches and serves.
  sys.start_connector({.id = "other-ok",
                       .cert = sys.certs().connector_other_crt,
                       .key = sys.certs().connector_other_key,
                       .aliases = {{"other", sys.demo_url("")}}});
  sys.start_edge();
  EXPECT_EQ(curl({sys.edge_url("/gateway/other/1.0/")}).status, 200);
  EXPECT_EQ(curl({sys.edge_url("/gateway/demo/1.0/")}).status, 503);
}

TEST_F(ReverseInvoke, BrokerRestartConnectorsReattach) {
  sys.start_all();
  ASSERT_EQ(curl({sys.edge_url("/gateway/demo/1.0/")}).status, 200);
  sys.broker->signal(SIGKILL);
  sys.broker->wait(5s);
  sys.start_broker();
  const auto t0 = std::chrono::steady_clock::now();
  int status = 0;
  while (std::chrono::steady_clock::now() - t0 < 15s) {
    status = curl({sys.edge_url("/gateway/demo/1.0/")}).status;
    if (status == 200) break;
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(status, 200);
  std::printf("[ info ] traffic resumed %lld ms after the broker restarted\n",
              static_cast<long long>(
                  std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count()));
  EXPECT_GE(metric_value(scrape(sys.broker_admin_port), "postern_broker_connectors_attached", {{"alias", "demo"}}), 1.0);
}

TEST_F(ReverseInvoke, TwoConnectorsShareLoadAndSurviveAKill) {
  sys.start_demo();
  sys.start_broker();
  sys.start_connector({.id = "c1"});
  sys.start_connector({.id = "c2"});
  sys.start_edge();
  for (int i = 0; i < 40; ++i) ASSERT_EQ(curl({sys.edge_url("/gateway/demo/1.0/slow?ms=5")}).status, 200);
  // The broker counts an exchange once its end has passed, a moment after
  // the client has the response: wait for the count.
  double c1 = 0;
  EXPECT_TRUE(wait_until(
      [&] { return (c1 = metric_value(scrape(sys.broker_admin_port), "postern_broker_exchanges_total")) >= 40.0; },
      2s))
      << c1;
  // Both connectors served a share of them.
  for (auto& c : sys.connectors) {
    const auto admin = listening_sockets(c->pid());
    ASSERT_EQ(admin.size(), 1u);
    EXPECT_GE(metric_value(scrape(admin[0].second), "postern_connector_requests_total"), 5.0) << c->argv()[2];
  }

  Load load;
  load.start({sys.edge_port}, "/gateway/demo/1.0/slow?ms=20", 4);
  std::this_thread::sleep_for(1s);
  const auto killed_at = Load::Clock::now();
  sys.connectors[0]->signal(SIGKILL);
  std::this_thread::sleep_for(2s);
  load.stop();
  // Nothing leaks on the survivor: every exchange finished on both sides,
  // and its lanes (2) are the broker's only connector lanes.
  const auto survivor = listening_sockets(sys.connectors[1]->pid());
  ASSERT_EQ(survivor.size(), 1u);
  double in_flight = -1, broker_in_flight = -1, lanes = -1, broker_lanes = -2;
  const bool settled = wait_until(
      [&] {
        const auto m = scrape(survivor[0].second);
        const auto b = scrape(sys.broker_admin_port);
        in_flight = metric_value(m, "postern_connector_exchanges_in_flight");
        broker_in_flight = metric_value(b, "postern_broker_exchanges_in_flight");
        lanes = metric_value(m, "postern_connector_lanes");
        broker_lanes = metric_value(b, "postern_broker_lanes", {{"from", "connector"}});
        return in_flight == 0 && broker_in_flight == 0 && lanes == broker_lanes && lanes == 2;
      },
      2s);
  EXPECT_TRUE(settled) << "in flight " << in_flight << " (broker: " << broker_in_flight << "), lanes " << lanes
                       << " (broker: " << broker_lanes << ")";
  // Only exchanges already handed to the killed connector may fail: at most
  // one per client thread, each a prompt 502 (never a timeout or a reset),
  // and none that started after the kill was seen.
  const auto failures = load.failures();
  EXPECT_LE(failures.size(), 4u) << load.describe_failures();
  long long worst_ms = 0;
  for (const auto& f : failures) {
    EXPECT_EQ(f.status, 502) << load.describe_failures();
    EXPECT_FALSE(f.reset || f.timed_out) << load.describe_failures();
    EXPECT_LT(f.latency(), 1s) << load.describe_failures();
    EXPECT_LT(ms_between(killed_at, f.start), 200) << "a request started after the kill failed\n"
                                                   << load.describe_failures();
    worst_ms = std::max<long long>(worst_ms, f.latency().count());
  }
  // Requests started after the kill succeed at once, on the survivor.
  int after = 0;
  for (const auto& r : load.records()) after += r.start >= killed_at && r.status == 200;
  EXPECT_GE(after, 40) << "requests must keep succeeding on the survivor";
  std::printf("[ info ] kill -9 under load: %zu failed (slowest %lld ms), %d succeeded after the kill\n",
              failures.size(), worst_ms, after);
}

TEST_F(ReverseInvoke, ConnectorSigtermUnderLoadLosesNothing) {
  sys.start_demo();
  sys.start_broker();
  sys.start_connector({.id = "c1"});
  sys.start_connector({.id = "c2"});
  sys.start_edge();
  Load load;
  load.start({sys.edge_port}, "/gateway/demo/1.0/slow?ms=30", 4);
  std::this_thread::sleep_for(1s);
  sys.connectors[0]->signal(SIGTERM);
  auto code = sys.connectors[0]->wait(15s);
  std::this_thread::sleep_for(500ms);
  load.stop();
  ASSERT_TRUE(code.has_value()) << "connector did not exit on SIGTERM";
  EXPECT_EQ(*code, 0);
  EXPECT_EQ(load.failed(), 0) << load.describe_failures();
  EXPECT_GT(load.ok(), 20);
}

TEST_F(ReverseInvoke, ConnectorListensOnlyOnLoopbackAdmin) {
  sys.start_all();
  auto sockets = listening_sockets(sys.connectors[0]->pid());
  ASSERT_EQ(sockets.size(), 1u);
  EXPECT_EQ(sockets[0].first, "127.0.0.1");
  EXPECT_TRUE(wait_http_status(sockets[0].second, "/healthz", 200, 5s));
  EXPECT_TRUE(wait_http_status(sockets[0].second, "/readyz", 200, 5s));
}

TEST_F(ReverseInvoke, RoutingDefaultAliasAnd404) {
  sys.start_demo();
  sys.start_broker();
  sys.start_connector();
  sys.start_edge();
  auto nf = curl({sys.edge_url("/nothing/here")});
  EXPECT_EQ(nf.status, 404);
  EXPECT_EQ(nf.header("content-type"), "application/problem+json");
  // The edge's own answers carry a Date (RFC 9110 6.6.1), as IMF-fixdate.
  EXPECT_TRUE(std::regex_match(nf.header("date"),
                               std::regex(R"([A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT)")))
      << nf.headers;
  // A DMZ-local API is called by the edge itself.
  auto local = curl({sys.edge_url("/gateway/local/1.0/bytes/10")});
  EXPECT_EQ(local.status, 200);
  EXPECT_EQ(local.body.size(), 10u);

  sys.edge.reset();
  sys.start_edge("default_alias: demo\n");
  auto delegated = curl({sys.edge_url("/headers")});
  EXPECT_EQ(delegated.status, 200);
  EXPECT_NE(delegated.body.find("\"target\":\"/headers\""), std::string::npos) << delegated.body;
}

TEST_F(ReverseInvoke, MalformedRequestIs400AndOversizedHeadIs431) {
  sys.start_all();
  auto bad = parse_response(raw_exchange(sys.edge_port, "GARBAGE\r\n\r\n"));
  EXPECT_EQ(bad.status, 400);
  EXPECT_NE(bad.header("content-type").find("problem+json"), std::string::npos);
  std::string big = "GET /gateway/demo/1.0/ HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(70000, 'a') + "\r\n\r\n";
  EXPECT_EQ(parse_response(raw_exchange(sys.edge_port, big)).status, 431);
  auto badchunk = parse_response(raw_exchange(
      sys.edge_port,
      "POST /gateway/demo/1.0/sink HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\nxx\r\n0\r\n\r\n"));
  EXPECT_EQ(badchunk.status, 400);
  // The edge still serves.
  EXPECT_EQ(curl({sys.edge_url("/gateway/demo/1.0/")}).status, 200);
}

// A client that breaks its chunked body after the exchange reached the
// connector gets 400, and the broker blames the client (result
// client_error, logged with the request id), never the connector: a
// connector_lost count would page someone for nothing.
TEST_F(ReverseInvoke, MalformedChunkMidBodyIsBlamedOnTheClient) {
  sys.start_all();
  UniqueFd fd = connect_loopback(sys.edge_port, 2s);
  ASSERT_TRUE(fd);
  ASSERT_TRUE(send_all(fd.get(),
                       "POST /gateway/demo/1.0/sink HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                       "5\r\nhello\r\n"));
  // The first chunk crosses to the connector; then the garbage.
  ASSERT_TRUE(wait_until(
      [&] {
        return metric_value(scrape(sys.broker_admin_port), "postern_broker_exchanges_in_flight") >= 1;
      },
      5s));
  ASSERT_TRUE(send_all(fd.get(), "ZZZ\r\nxx\r\n0\r\n\r\n"));
  const auto r = parse_response(recv_response(fd.get(), 5s));
  EXPECT_EQ(r.status, 400) << r.body;
  const std::string request_id = r.header("x-request-id");
  ASSERT_FALSE(request_id.empty());
  EXPECT_TRUE(wait_until(
      [&] {
        return metric_value(scrape(sys.broker_admin_port), "postern_broker_exchanges_total",
                            {{"alias", "demo"}, {"result", "client_error"}}) == 1;
      },
      5s))
      << scrape(sys.broker_admin_port);
  EXPECT_EQ(metric_value(scrape(sys.broker_admin_port), "postern_broker_exchanges_total",
                         {{"alias", "demo"}, {"result", "connector_lost"}}),
            0);
  sys.broker->wait_for_log("\"msg\":\"exchange ended by the edge\".*\"request_id\":\"" + request_id +
                           "\".*\"result\":\"client_error\"");
  EXPECT_EQ(sys.broker->count_log("connector lost mid-exchange"), 0) << sys.broker->log_tail();
  // The edge still serves.
  EXPECT_EQ(curl({sys.edge_url("/gateway/demo/1.0/")}).status, 200);
}

TEST_F(ReverseInvoke, TlsOutsideAndHttpsNativeInside) {
  sys.start_demo(/*tls=*/true);
  sys.start_broker();
  sys.start_connector();
  const std::string tls_listener = "listeners:\n  - {listen: \"127.0.0.1:0\", tls: {cert_file: \"" +
                                   sys.certs().edge_crt + "\", key_file: \"" + sys.certs().edge_key + "\"}}\n";
  // The extra YAML replaces the default plain listener.
  sys.start_edge();
  sys.edge.reset();
  std::string cfg = read_file(sys.dir().file("edge.yaml"));
  cfg.replace(cfg.find("listeners:"), cfg.find("public_url") - cfg.find("listeners:"), tls_listener);
  write_file(sys.dir().file("edge-tls.yaml"), cfg);
  sys.edge = Process::start({binary_path("postern-edge"), "--config", sys.dir().file("edge-tls.yaml")},
                            sys.dir().file("edge-tls.log"));
  const auto port = sys.edge->wait_for_port("external-tls");
  auto r = curl({"--cacert", sys.certs().ca, "https://localhost:" + std::to_string(port) + "/gateway/demo/1.0/headers"});
  EXPECT_EQ(r.status, 200) << r.stderr_text;
  EXPECT_NE(r.body.find("[\"X-Forwarded-Proto\",\"https\"]"), std::string::npos) << r.body;
  // An untrusted client verification fails the handshake, not the edge.
  auto untrusted = curl({"https://localhost:" + std::to_string(port) + "/gateway/demo/1.0/"});
  EXPECT_NE(untrusted.exit_code, 0);
}

// Chunked trailers cross both ways: the client's request trailers reach the
// native service, the native service's response trailers reach the client.
TEST_F(ReverseInvoke, ChunkedTrailersPassBothWays) {
  sys.start_all();
  for (const std::string path : {"/gateway/demo/1.0/trailers", "/gateway/local/1.0/trailers"}) {
    const std::string raw = raw_exchange(sys.edge_port, "POST " + path +
                                                            " HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                                                            "Transfer-Encoding: chunked\r\n\r\n"
                                                            "5\r\nhello\r\n0\r\nX-Client-Trailer: abc\r\n\r\n");
    auto res = parse_response(raw);
    EXPECT_EQ(res.status, 200) << raw;
    EXPECT_EQ(res.body, "trailers\n") << raw;
    const auto last_chunk = raw.find("\r\n0\r\n");
    ASSERT_NE(last_chunk, std::string::npos) << raw;
    const std::string trailer_part = raw.substr(last_chunk);
    EXPECT_NE(trailer_part.find("X-Demo-Trailer: yes\r\n"), std::string::npos) << path << "\n" << raw;
    EXPECT_NE(trailer_part.find("X-Echo-X-Client-Trailer: abc\r\n"), std::string::npos) << path << "\n" << raw;
  }
}

TEST_F(ReverseInvoke, RelayPortOverTls) {
  sys.relay_tls = true;
  sys.start_all();
  auto r = curl({sys.edge_url("/gateway/demo/1.0/")});
  EXPECT_EQ(r.status, 200) << r.body;
  // A plaintext client cannot use the TLS relay port.
  // It never gets the policy snapshot, so it never reports ready.
  sys.relay_tls = false;
  sys.edge.reset();
  sys.edge_wait_ready = false;
  sys.start_edge();
  sys.edge->wait_for_log("snapshot stream ended, reconnecting");
  EXPECT_EQ(curl({"http://127.0.0.1:" + std::to_string(sys.edge_admin_port) + "/readyz"}).status, 503);
  auto plain = curl({sys.edge_url("/gateway/demo/1.0/")});
  EXPECT_EQ(plain.status, 503) << plain.body;
}

// A lane carries one exchange after another: sequential requests open no
// call of their own, and bodies both ways (a POST with a body, a chunked
// response) come out right in between.
TEST_F(ReverseInvoke, LanesCarryExchangeAfterExchange) {
  sys.start_all();
  const auto opened = [&](const char* from) {
    return metric_value(scrape(sys.broker_admin_port), "postern_broker_lanes_opened_total", {{"from", from}});
  };
  ASSERT_EQ(curl({sys.edge_url("/gateway/demo/1.0/")}).status, 200);
  const double edge_before = opened("edge"), connector_before = opened("connector");
  constexpr int kRequests = 50;
  for (int i = 0; i < kRequests; ++i) {
    if (i % 10 == 3) {
      const std::string body = "posted body #" + std::to_string(i) + std::string(1000, 'x');
      auto r = curl({"-X", "POST", "--data-binary", body, sys.edge_url("/gateway/demo/1.0/echo")});
      ASSERT_EQ(r.status, 200) << i;
      EXPECT_EQ(r.body, body) << i;
    } else if (i % 10 == 7) {
      auto r = curl({sys.edge_url("/gateway/demo/1.0/bytes/70000?chunked=1")});
      ASSERT_EQ(r.status, 200) << i;
      EXPECT_EQ(r.header("transfer-encoding"), "chunked") << i;
      EXPECT_EQ(r.body.size(), 70000u) << i;
      EXPECT_EQ(sha256_hex(r.body), r.header("x-demo-sha256")) << i;
    } else {
      auto r = curl({sys.edge_url("/gateway/demo/1.0/")});
      ASSERT_EQ(r.status, 200) << i;
      EXPECT_EQ(r.body, "Hello from the Postern demo native service\n") << i;
    }
  }
  // A call per exchange would be 50 more on each side; lanes need none.
  EXPECT_EQ(opened("edge"), edge_before) << "lanes opened by the edge for " << kRequests << " sequential requests";
  EXPECT_EQ(opened("connector"), connector_before)
      << "lanes opened by the connector for " << kRequests << " sequential requests";
  std::string m;
  EXPECT_TRUE(wait_until(
      [&] {
        m = scrape(sys.broker_admin_port);
        return metric_value(m, "postern_broker_exchanges_total", {{"alias", "demo"}, {"result", "ok"}}) >=
               kRequests + 1;
      },
      2s));
  EXPECT_EQ(metric_value(m, "postern_broker_exchanges_total", {{"alias", "demo"}, {"result", "ok"}}),
            static_cast<double>(kRequests + 1));
  EXPECT_EQ(metric_value(m, "postern_broker_exchanges_in_flight"), 0.0);
  EXPECT_EQ(metric_value(m, "postern_broker_lanes", {{"from", "connector"}}), 2.0);
  EXPECT_EQ(metric_value(m, "postern_broker_lanes", {{"from", "edge"}}), 1.0);
}

// More exchanges at once than lanes: they share the lanes, which stay as
// they are (no call opened or ended under load), and nothing is left in
// flight after.
TEST_F(ReverseInvoke, LanesCarryConcurrentExchangesWithoutChurn) {
  sys.start_all();
  const auto opened = [&] {
    const auto m = scrape(sys.broker_admin_port);
    return metric_value(m, "postern_broker_lanes_opened_total", {{"from", "connector"}}) +
           metric_value(m, "postern_broker_lanes_opened_total", {{"from", "edge"}});
  };
  ASSERT_EQ(curl({sys.edge_url("/gateway/demo/1.0/")}).status, 200);
  const double before = opened();
  Load load;
  load.start({sys.edge_port}, "/gateway/demo/1.0/slow?ms=5", 12, 5s, 3s);
  std::this_thread::sleep_for(3s);
  load.stop();
  EXPECT_GE(load.ok(), 200) << load.describe_failures();
  EXPECT_EQ(load.failed(), 0) << load.describe_failures();
  std::printf("[ info ] %d exchanges, 12 at a time, opened %.0f lanes\n", load.ok(), opened() - before);
  EXPECT_EQ(opened(), before) << "lanes opened for " << load.ok() << " exchanges, 12 at a time";
  EXPECT_TRUE(wait_until(
      [&] { return metric_value(scrape(sys.broker_admin_port), "postern_broker_exchanges_in_flight") == 0.0; }, 2s));
}

// A GET and a small response each cross every hop as one gRPC message:
// the request's head and end together, the response's head, body and end
// together. Each message costs a completion-queue round trip at both ends
// of a hop.
TEST_F(ReverseInvoke, SmallExchangeCrossesAsOneMessageEachWay) {
  sys.start_all();
  ASSERT_EQ(curl({sys.edge_url("/gateway/demo/1.0/")}).status, 200);
  // Counted from once the connector's lanes are up.
  ASSERT_TRUE(wait_until(
      [&] {
        return metric_value(scrape(sys.broker_admin_port), "postern_broker_lanes", {{"from", "connector"}}) >= 2.0;
      },
      5s));
  const auto counts = [&] {
    const auto m = scrape(sys.broker_admin_port);
    return std::pair{metric_value(m, "postern_broker_tunnel_messages_total", {{"from", "edge"}}),
                     metric_value(m, "postern_broker_tunnel_messages_total", {{"from", "connector"}})};
  };
  const auto before = counts();
  constexpr int kRequests = 20;
  for (int i = 0; i < kRequests; ++i) {
    auto r = curl({sys.edge_url("/gateway/demo/1.0/")});
    ASSERT_EQ(r.status, 200) << i;
    EXPECT_EQ(r.body, "Hello from the Postern demo native service\n") << i;
  }
  const auto after = counts();
  EXPECT_EQ(after.first - before.first, kRequests) << "messages from the edge";
  EXPECT_EQ(after.second - before.second, kRequests) << "messages from the connector";
  // A body still streams: a POST is more than one message, and arrives whole.
  const std::string body(100000, 'p');
  auto r = curl({"-X", "POST", "--data-binary", body, sys.edge_url("/gateway/demo/1.0/echo")});
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.body, body);
  EXPECT_GT(counts().first - after.first, 1.0);
}

// A body piece carries what has arrived: a native service that sends a
// little and then pauses gets that little to the client at once, not when
// a piece is full or the body is over.
// Connects to `port` and sends a GET of `target` with Connection: close.
UniqueFd send_get(std::uint16_t port, const std::string& target) {
  auto fd = connect_loopback(port);
  if (!fd) return fd;
  const std::string req = "GET " + target + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  if (!send_all(fd.get(), req)) return UniqueFd();
  return fd;
}

TEST_F(ReverseInvoke, StreamingResponseIsNotHeldBackToFillAPiece) {
  sys.start_all();
  auto fd = send_get(sys.edge_port, "/gateway/demo/1.0/drip?chunks=2&ms=3000&size=100");
  ASSERT_TRUE(fd);
  const auto sent = std::chrono::steady_clock::now();
  std::string got;
  // The first 100 bytes of body, then stop reading; the second piece comes
  // 3 s after the first.
  ASSERT_TRUE(recv_head_and(fd.get(), got, 100, 10s)) << "connection ended early: " << got;
  const auto first_piece = std::chrono::steady_clock::now() - sent;
  EXPECT_NE(got.find(" 200 "), std::string::npos) << got;
  EXPECT_LT(first_piece, 2500ms) << "the first 100 bytes waited for the second piece";
}

// The edge sends a response head together with the first body piece when
// both are at hand, but never holds a head back waiting for a body that has
// not come yet.
TEST_F(ReverseInvoke, ResponseHeadIsNotHeldBackForALateBody) {
  sys.start_all();
  auto fd = send_get(sys.edge_port, "/gateway/demo/1.0/drip?chunks=1&first_ms=3000&size=10");
  ASSERT_TRUE(fd);
  const auto sent = std::chrono::steady_clock::now();
  std::string got;
  ASSERT_TRUE(recv_head_and(fd.get(), got, 0, 10s)) << "connection ended early: " << got;
  const auto head = std::chrono::steady_clock::now() - sent;
  EXPECT_EQ(got.substr(0, 12), "HTTP/1.1 200") << got;
  EXPECT_LT(head, 2500ms) << "the head waited for the body";
  // The body follows, whole.
  got += recv_to_end(fd.get(), 10s);
  EXPECT_NE(got.find("\r\n\r\na\r\n"), std::string::npos) << got;  // one 10-byte chunk
}

TEST_F(ReverseInvoke, MetricsCountRequestsAndConnectors) {
  sys.start_all();
  for (int i = 0; i < 3; ++i) ASSERT_EQ(curl({sys.edge_url("/gateway/demo/1.0/")}).status, 200);
  EXPECT_EQ(curl({sys.edge_url("/gateway/ghost/1.0/")}).status, 503);
  auto edge = scrape(sys.edge_admin_port);
  EXPECT_EQ(metric_value(edge, "postern_edge_requests_total", {{"api", "demo"}, {"code", "200"}}), 3.0);
  EXPECT_EQ(metric_value(edge, "postern_edge_requests_total", {{"api", "ghost"}, {"code", "503"}}), 1.0);
  auto broker = scrape(sys.broker_admin_port);
  EXPECT_EQ(metric_value(broker, "postern_broker_connectors_attached", {{"alias", "demo"}}), 1.0);
  EXPECT_EQ(metric_value(broker, "postern_broker_lanes", {{"from", "connector"}}), 2.0);
  EXPECT_EQ(metric_value(broker, "postern_broker_lanes", {{"from", "edge"}}), 1.0);
  EXPECT_EQ(metric_value(broker, "postern_broker_exchanges_total", {{"alias", "ghost"}, {"result", "no_connector"}}),
            1.0);
}

}  // namespace
}  // namespace postern::testing
