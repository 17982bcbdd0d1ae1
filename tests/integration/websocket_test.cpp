// WebSocket APIs through reverse invoke, with the real binaries: policy
// service -> connector -> broker -> edge, the demo echo broadcaster as the
// native service, Python websockets and headless Chromium as the clients.

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <boost/json.hpp>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <csignal>
#include <filesystem>
#include <future>
#include <regex>
#include <thread>

#include "support/http.hpp"
#include "support/jwt_keys.hpp"
#include "support/sockets.hpp"
#include "support/system.hpp"
#include "support/ws.hpp"

namespace postern::testing {
namespace {

using namespace std::chrono_literals;
namespace json = boost::json;

constexpr const char* kKey = "ws-alpha-key-0123456789";

// Every WebSocket policy, each on an API of its own (and so a demo room of
// its own: the demo broadcasts per path). @TRANSFORM@ is the demo transform
// service's address.
const char* kPolicies = R"(apis:
  - name: chat
    version: "1.0"
    type: websocket
    routing: apigateway://demo/api/demo/
    description: the echo broadcaster
    messages:
      - {name: hello, origin: client, type: text, sample: "Hello", description: "a chat line"}
      - {name: echo, origin: server, type: text, sample: "Message Received from a: Hello"}
      - {name: blob, origin: client, type: binary, description: "sent back as is"}
  - {name: refusing, version: "1.0", type: websocket, routing: "apigateway://demo/refuse/403"}
  - {name: dmz-chat, version: "1.0", type: websocket, routing: "ws://127.0.0.1:@DEMO@/api/dmz/"}
  - {name: rest, version: "1.0", routing: "apigateway://demo/", allow_overlap: true}
  - name: keyed
    version: "1.0"
    type: websocket
    routing: apigateway://demo/ws/keyed/
    policies:
      identify: {identifiers: [API_KEY]}
  - name: keyed-green
    version: "1.0"
    type: websocket
    enforcement: GREEN
    routing: apigateway://demo/ws/keyed-green
    policies:
      identify: {identifiers: [API_KEY]}
  - name: origins
    version: "1.0"
    type: websocket
    routing: apigateway://demo/ws/origins
    policies:
      websocket: {allowed_origins: ["https://app.example.com"]}
  - name: limited
    version: "1.0"
    type: websocket
    routing: apigateway://demo/ws/limited
    policies:
      throttling:
        concurrency: [{key: API, max: 2, retry_after: 3s}]
  - name: sized
    version: "1.0"
    type: websocket
    routing: apigateway://demo/ws/sized
    policies:
      threat_protection:
        max_ws_message_bytes: {max: 3145728}
  - name: edited
    version: "1.0"
    type: websocket
    routing: apigateway://demo/ws/edited
    policies:
      message_transformation:
        client_to_server:
          - {json_set: {via: '"postern"'}, json_remove: [secret]}
          - {append: "!"}
        server_to_client:
          - {prepend: "[gw] "}
  - name: serviced
    version: "1.0"
    type: websocket
    enforcement: GREEN
    routing: apigateway://demo/ws/serviced
    policies:
      message_transformation:
        service: {address: "@TRANSFORM@", timeout: 1s}
  - name: fail-open
    version: "1.0"
    type: websocket
    enforcement: GREEN
    routing: apigateway://demo/ws/fail-open
    policies:
      message_transformation:
        service: {address: "127.0.0.1:1", timeout: 500ms, fail_open: true}
  - name: fail-closed
    version: "1.0"
    type: websocket
    enforcement: GREEN
    routing: apigateway://demo/ws/fail-closed
    policies:
      message_transformation:
        service: {address: "127.0.0.1:1", timeout: 500ms}
  - name: logged
    version: "1.0"
    type: websocket
    routing: apigateway://demo/ws/logged
    policies:
      log_invocation: {store_client_messages: true, store_server_messages: true, compress_payload: true}
  - name: idle
    version: "1.0"
    type: websocket
    routing: apigateway://demo/ws/idle
    policies:
      websocket: {idle_timeout: 1s}
  - name: pinged
    version: "1.0"
    type: websocket
    routing: apigateway://demo/ws/pinged
    policies:
      websocket: {ping_interval: 300ms}
  - name: short-lived
    version: "1.0"
    type: websocket
    routing: apigateway://demo/ws/short-lived
    policies:
      websocket: {max_lifetime: 1s}
applications:
  - name: alpha
    api_keys: [{key_file: keys/alpha}]
    apis: [keyed, keyed-green]
)";

std::string hex_of(std::string_view s) {
  static const char* d = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    out += d[c >> 4];
    out += d[c & 15];
  }
  return out;
}

std::string first_text(const json::object& r) {
  auto it = r.find("received");
  if (it == r.end() || !it->value().is_array() || it->value().as_array().empty()) return {};
  return str(it->value().as_array()[0].as_object(), "data");
}

class WebSockets : public ::testing::Test {
 protected:
  void start(bool with_transform = false) {
    std::filesystem::create_directories(sys.dir().file("keys"));
    write_file(sys.dir().file("keys/alpha"), std::string(kKey) + "\n");
    sys.start_demo();
    std::string yaml = kPolicies;
    std::string transform_addr = "127.0.0.1:1";
    if (with_transform) {
      transform = Process::start({binary_path("postern-demo"), "--listen", "127.0.0.1:0", "--transform-listen",
                                  "127.0.0.1:0"},
                                 sys.dir().file("transform.log"));
      transform_addr = "127.0.0.1:" + std::to_string(transform->wait_for_port("transform"));
    }
    yaml = std::regex_replace(yaml, std::regex("@TRANSFORM@"), transform_addr);
    yaml = std::regex_replace(yaml, std::regex("@DEMO@"), std::to_string(sys.demo_port));
    sys.start_policy(yaml);
    sys.start_broker();
    sys.start_connector({.extra_yaml = connector_yaml});
    sys.start_edge("invocation_log_file: \"" + edge_log() + "\"\n");
  }
  std::string connector_yaml;  ///< appended to the connector's config by start()
  std::string edge_log() { return sys.dir().file("edge-invocations.log"); }
  std::string ws(const std::string& api, const std::string& rest = "/") {
    return "ws://127.0.0.1:" + std::to_string(sys.edge_port) + "/gateway/" + api + "/1.0" + rest;
  }
  static json::array received(const json::object& r) {
    auto it = r.find("received");
    return it != r.end() && it->value().is_array() ? it->value().as_array() : json::array{};
  }
  static std::string text_at(const json::object& r, std::size_t i) {
    auto a = received(r);
    return i < a.size() ? str(a[i].as_object(), "data") : std::string();
  }
  System sys;
  std::unique_ptr<Process> transform;
};

TEST_F(WebSockets, BroadcastBetweenThreeClientsThroughTheGateway) {
  start();
  const auto r = ws_client({"broadcast", ws("chat", "/room"), "--users", "ann,bob,cy"});
  ASSERT_TRUE(r.contains("received")) << json::serialize(r);
  const auto& got = r.at("received").as_object();
  for (const char* user : {"ann", "bob", "cy"}) {
    ASSERT_TRUE(got.contains(user)) << json::serialize(r);
    std::set<std::string> lines;
    for (const auto& l : got.at(user).as_array()) lines.insert(std::string(l.as_string()));
    EXPECT_EQ(lines, (std::set<std::string>{"Message Received from ann: hello from ann",
                                            "Message Received from bob: hello from bob",
                                            "Message Received from cy: hello from cy"}))
        << user << ": " << json::serialize(r);
  }
  // The edge counted the sessions and their messages.
  wait_until([&] { return metric_value(scrape(sys.edge_admin_port), "postern_edge_websocket_sessions_total") >= 3; },
             5s);
  const auto m = scrape(sys.edge_admin_port);
  EXPECT_EQ(metric_value(m, "postern_edge_websocket_sessions_total", {{"api", "chat"}, {"close_code", "1000"}}), 3)
      << m;
  EXPECT_EQ(metric_value(m, "postern_edge_websocket_messages_total",
                         {{"api", "chat"}, {"direction", "client_to_server"}}),
            3);
  EXPECT_EQ(metric_value(m, "postern_edge_websocket_messages_total",
                         {{"api", "chat"}, {"direction", "server_to_client"}}),
            9);
  EXPECT_EQ(metric_value(m, "postern_edge_websocket_sessions"), 0);
}

TEST_F(WebSockets, UpgradeAnsweredOnlyAfterTheNativeServiceAndItsChoicesRelayed) {
  start();
  // The native service refuses: the client gets its status, not a 101.
  const auto refused = ws_client({"script", ws("refusing")});
  EXPECT_EQ(num(refused, "status"), 403) << json::serialize(refused);
  // ...with its body, as any response.
  const auto raw = parse_response(raw_exchange(
      sys.edge_port, "GET /gateway/refusing/1.0/ HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"));
  EXPECT_EQ(raw.status, 403) << raw.head;
  EXPECT_EQ(raw.body, "refused by the demo: status 403\n") << raw.head;
  EXPECT_FALSE(raw.header("x-request-id").empty()) << raw.head;
  // Subprotocols go to the native service, and its choice comes back (the
  // demo prefers chat.v2, whatever the client's order).
  const auto chosen = ws_client({"script", ws("chat", "/sub"), "--subprotocol", "chat.v1", "--subprotocol", "chat.v2"});
  EXPECT_EQ(num(chosen, "status"), 101) << json::serialize(chosen);
  EXPECT_EQ(str(chosen, "subprotocol"), "chat.v2") << json::serialize(chosen);
  // The API context with and without its trailing slash reaches the native
  // path /api/demo/ alike: both clients are in one room.
  const auto a = ws_client({"script", "ws://127.0.0.1:" + std::to_string(sys.edge_port) + "/gateway/chat/1.0",
                            "send=no-slash", "recv=1", "fragments=frag,men,ted", "recv=1", "ping"});
  EXPECT_EQ(text_at(a, 0), "Message Received from anonymous: no-slash") << json::serialize(a);
  // A message sent in three frames arrives whole; the edge answers pings.
  EXPECT_EQ(text_at(a, 1), "Message Received from anonymous: fragmented") << json::serialize(a);
  EXPECT_EQ(num(a, "pongs"), 1) << json::serialize(a);
  EXPECT_NE(sys.demo->log().find("\"msg\":\"websocket open\",\"path\":\"/api/demo\""), std::string::npos)
      << sys.demo->log_tail();
  // Type mismatches are named.
  const auto rest = ws_client({"script", ws("rest")});
  EXPECT_EQ(num(rest, "status"), 400) << json::serialize(rest);
  const auto plain = curl({ws("chat").replace(0, 2, "http")});
  EXPECT_EQ(plain.status, 426) << plain.body;
  EXPECT_EQ(plain.header("upgrade"), "websocket");
  EXPECT_NE(plain.body.find("WebSocket API"), std::string::npos) << plain.body;

  // A DMZ-local ws:// API: the edge opens the native WebSocket itself.
  const auto local = ws_client({"script", ws("dmz-chat", "/room?user=d"), "send=local", "recv=1", "send=/close 4005 x",
                                "wait_close=5"});
  EXPECT_EQ(text_at(local, 0), "Message Received from d: local") << json::serialize(local);
  EXPECT_EQ(num(local, "close_code"), 4005);
  EXPECT_NE(sys.demo->log().find("\"path\":\"/api/dmz/room\""), std::string::npos) << sys.demo->log_tail();

  // The message metadata of the API definition is kept and listed.
  const auto apis = curl({"http://127.0.0.1:" + std::to_string(sys.policy_admin_port) + "/apis"});
  EXPECT_NE(apis.body.find(R"("messages":[{"name":"hello","origin":"CLIENT","type":"TEXT","sample":"Hello","description":"a chat line"})"),
            std::string::npos)
      << apis.body;
  EXPECT_NE(apis.body.find(R"({"name":"blob","origin":"CLIENT","type":"BINARY","description":"sent back as is"})"),
            std::string::npos)
      << apis.body;
}

// A raw client that never answers: the edge pings it every ping_interval
// and drops it when a second interval passes without a pong.
TEST_F(WebSockets, KeepAlivePingsAndASilentClientIsDropped) {
  start();
  auto fd = connect_loopback(sys.edge_port, 2s);
  ASSERT_TRUE(fd);
  const std::string req =
      "GET /gateway/pinged/1.0/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
  ASSERT_EQ(::send(fd.get(), req.data(), req.size(), 0), static_cast<ssize_t>(req.size()));
  timeval tv{3, 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string got;
  const auto t0 = std::chrono::steady_clock::now();
  bool closed = false;
  while (std::chrono::steady_clock::now() - t0 < 5s) {
    char buf[4096];
    const auto n = ::recv(fd.get(), buf, sizeof buf, 0);
    if (n <= 0) {
      closed = n == 0 || errno == ECONNRESET;
      break;
    }
    got.append(buf, static_cast<std::size_t>(n));
  }
  const auto elapsed = std::chrono::steady_clock::now() - t0;
  ASSERT_NE(got.find("HTTP/1.1 101"), std::string::npos) << got;
  const auto body = got.substr(got.find("\r\n\r\n") + 4);
  // A ping frame from the server: FIN + opcode 9, unmasked.
  EXPECT_NE(body.find("\x89"), std::string::npos) << hex_of(body);

  // An upgrade with a body is malformed: 400, the connection closes.
  const auto raw = raw_exchange(sys.edge_port,
                                "GET /gateway/chat/1.0/ HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                                "Content-Length: 3\r\n\r\nabc");
  const auto res = parse_response(raw);
  EXPECT_EQ(res.status, 400) << raw;
  EXPECT_NE(res.body.find("carries no body"), std::string::npos) << raw;
  EXPECT_TRUE(closed) << "the silent client was not dropped";
  EXPECT_LT(elapsed, 3s);
  EXPECT_GT(elapsed, 400ms);
}

TEST_F(WebSockets, EdgeDrainClosesSessionsWith1001) {
  start();
  auto client = std::async(std::launch::async, [&] {
    return ws_client({"script", ws("chat", "/drain"), "send=x", "recv=1", "wait_close=10"});
  });
  ASSERT_TRUE(wait_until([&] { return sys.demo->count_log("\"path\":\"/api/demo/drain\"") > 0; }, 10s));
  std::this_thread::sleep_for(300ms);
  sys.edge->signal(SIGTERM);
  const auto r = client.get();
  EXPECT_EQ(num(r, "close_code"), 1001) << json::serialize(r);
  EXPECT_EQ(str(r, "close_reason"), "server draining");
  EXPECT_EQ(sys.edge->wait(10s), std::optional<int>(0));
  // The native service saw the session end too.
  sys.demo->wait_for_log("\"msg\":\"websocket closed\",\"path\":\"/api/demo/drain\"", 5s);
}

// An open session counts as a request in flight at the edge until it ends
// (a drain waits for it), and its request log line and counter (101) come
// when it ends. After the 101 the session runs in a coroutine of its own
// and the HTTP connection's coroutines end (about 10 KiB less per idle
// session at the edge); this bookkeeping moved with it.
TEST_F(WebSockets, AnOpenSessionIsInFlightAndLoggedWhenItEnds) {
  start();
  auto in_flight = [&] { return metric_value(scrape(sys.edge_admin_port), "postern_edge_requests_in_flight"); };
  auto client = std::async(std::launch::async, [&] {
    return ws_client({"script", ws("chat", "/inflight"), "send=x", "recv=1", "sleep=1.5", "close=1000:done"});
  });
  ASSERT_TRUE(wait_until([&] { return sys.demo->count_log("\"path\":\"/api/demo/inflight\"") > 0; }, 10s));
  EXPECT_TRUE(wait_until([&] { return in_flight() == 1.0; }, 5s));
  EXPECT_EQ(sys.edge->count_log("\"status\":101"), 0) << "logged before the session ended: " << sys.edge->log_tail();
  const auto r = client.get();
  EXPECT_EQ(num(r, "close_code"), 1000) << json::serialize(r);
  EXPECT_TRUE(wait_until([&] { return in_flight() == 0.0; }, 5s));
  EXPECT_TRUE(wait_until([&] { return sys.edge->count_log("\"status\":101") == 1; }, 5s)) << sys.edge->log_tail();
  // A session, not a request: counted in its own histogram, by its length.
  const auto m = scrape(sys.edge_admin_port);
  EXPECT_EQ(metric_value(m, "postern_edge_requests_total", {{"api", "chat"}}), 0.0) << m;
  EXPECT_EQ(metric_value(m, "postern_edge_websocket_session_duration_seconds_count", {{"api", "chat"}}), 1.0) << m;
  EXPECT_GE(metric_value(m, "postern_edge_websocket_session_duration_seconds_sum", {{"api", "chat"}}), 1.5) << m;
}

TEST_F(WebSockets, PoliciesAtTheUpgradeRefuseBeforeAny101) {
  start();
  // Identify & Authorize: no key or a wrong key, 401; the key in the
  // x-Gateway-APIKey query parameter or header, 101. At the edge and in the
  // green zone alike.
  for (const char* api : {"keyed", "keyed-green"}) {
    const auto none = ws_client({"script", ws(api)});
    EXPECT_EQ(num(none, "status"), 401) << api << json::serialize(none);
    const auto wrong = ws_client({"script", ws(api, "/?x-Gateway-APIKey=nope")});
    EXPECT_EQ(num(wrong, "status"), 401) << api << json::serialize(wrong);
    const auto query = ws_client({"script", ws(api, std::string("/?x-Gateway-APIKey=") + kKey), "send=hi", "recv=1"});
    EXPECT_EQ(num(query, "status"), 101) << api << json::serialize(query);
    EXPECT_EQ(text_at(query, 0), "Message Received from anonymous: hi") << json::serialize(query);
    const auto header = ws_client({"script", ws(api), "--header", std::string("x-Gateway-APIKey: ") + kKey});
    EXPECT_EQ(num(header, "status"), 101) << api << json::serialize(header);
  }
  EXPECT_EQ(sys.demo->log().find(kKey), std::string::npos) << "the native service saw the key";
  EXPECT_EQ(sys.demo->count_log("\"msg\":\"websocket open\",\"path\":\"/ws/keyed"), 4)
      << "the demo saw the accepted sessions only";

  // Origin allow-list.
  const auto bad = ws_client({"script", ws("origins"), "--origin", "https://evil.example.com"});
  EXPECT_EQ(num(bad, "status"), 403) << json::serialize(bad);
  const auto missing = ws_client({"script", ws("origins")});
  EXPECT_EQ(num(missing, "status"), 403) << json::serialize(missing);
  const auto good = ws_client({"script", ws("origins"), "--origin", "https://app.example.com"});
  EXPECT_EQ(num(good, "status"), 101) << json::serialize(good);

  // Active-connection throttling: two at once, the third gets 503 and
  // Retry-After; once they close, a new one is admitted.
  const auto held = ws_client({"hold", ws("limited"), "--count", "3", "--seconds", "0.3"});
  ASSERT_TRUE(held.contains("statuses")) << json::serialize(held);
  EXPECT_EQ(json::serialize(held.at("statuses")), "[101,101,503]");
  EXPECT_EQ(json::serialize(held.at("retry_after")), "[\"\",\"\",\"3\"]");
  EXPECT_TRUE(wait_until([&] { return num(ws_client({"script", ws("limited")}), "status") == 101; }, 5s));

  const auto m = scrape(sys.edge_admin_port);
  EXPECT_GE(metric_value(m, "postern_edge_policy_decisions_total", {{"api", "origins"}, {"outcome", "rejected"}}), 2)
      << m;
}

// Memory a burst of sessions took goes back to the system once they have
// closed (jemalloc with its background thread: cmake/PosternMalloc.cmake).
// glibc's heap kept about all of it: after 10,000 sessions, 308-406 MiB per
// service where 21-25 MiB had been enough before them.
TEST_F(WebSockets, MemoryABurstOfSessionsTookIsReturnedAfterTheyClose) {
#ifndef POSTERN_SERVICES_JEMALLOC
  GTEST_SKIP() << "the services are not built with jemalloc here (sanitizers, or POSTERN_JEMALLOC=OFF)";
#else
  // More sessions than the connector's default max_concurrency (256): with
  // sessions sharing streams a session takes 15-25 KiB in the edge and the
  // connector, and what jemalloc keeps for reuse must not hide the return.
  // Under 1,000 descriptors per process, the usual default limit.
  connector_yaml = "max_concurrency: 1000\n";
  start();
  const std::pair<const char*, Process*> services[] = {
      {"edge", sys.edge.get()}, {"broker", sys.broker.get()}, {"connector", sys.connectors[0].get()}};
  // Warm: the first session's one-off allocations are not the burst's.
  ASSERT_EQ(num(ws_client({"script", ws("chat", "/burst"), "send=x", "recv=1"}), "status"), 101);
  long before[3];
  for (int i = 0; i < 3; ++i) before[i] = services[i].second->rss_kib();
  constexpr int kSessions = 800;
  const auto held =
      ws_client({"hold", ws("chat", "/burst"), "--count", std::to_string(kSessions), "--seconds", "1"}, 60s);
  ASSERT_TRUE(held.contains("statuses")) << json::serialize(held);
  const auto& statuses = held.at("statuses").as_array();
  ASSERT_EQ(statuses.size(), static_cast<std::size_t>(kSessions));
  EXPECT_EQ(std::count_if(statuses.begin(), statuses.end(), [](const json::value& v) { return v.as_int64() == 101; }),
            kSessions);
  long peak[3];
  bool grew[3];
  for (int i = 0; i < 3; ++i) {
    peak[i] = services[i].second->peak_rss_kib();
    grew[i] = peak[i] - before[i] > kSessions * 10L;
  }
  // The burst took memory worth measuring in the edge and the connector
  // (their WebSocket streams and relays); the broker holds only a route per
  // session, the sessions sharing its streams.
  EXPECT_TRUE(grew[0]) << "edge: " << peak[0] - before[0] << " KiB";
  EXPECT_TRUE(grew[2]) << "connector: " << peak[2] - before[2] << " KiB";
  // Within jemalloc's decay time (10 s) and some: each service keeps less
  // than half of what the burst added (about 30 % in the release build at
  // the moment all three got there; glibc's heap kept all of it).
  long now[3] = {0, 0, 0};
  const bool returned = wait_until(
      [&] {
        bool all = true;
        for (int i = 0; i < 3; ++i) {
          now[i] = services[i].second->rss_kib();
          all = all && (!grew[i] || (now[i] - before[i]) * 2 < peak[i] - before[i]);
        }
        return all;
      },
      30s);
  for (int i = 0; i < 3; ++i) {
    std::printf("[ info ] %s RSS %ld KiB before, %ld KiB at the burst's peak, %ld KiB after\n", services[i].first,
                before[i], peak[i], now[i]);
  }
  EXPECT_TRUE(returned) << "RSS did not come back down after the sessions closed";
#endif
}

// Sessions share the lanes (tunnel.proto): while 50 are open, the broker
// has the edge's one lane and the connector's two, and no lane was opened
// for them. (With a gRPC call per session on each hop, each session cost
// about 55 KiB of gRPC state.)
TEST_F(WebSockets, SessionsShareTheLanes) {
  start();
  ASSERT_EQ(num(ws_client({"script", ws("chat", "/warm"), "send=x", "recv=1"}), "status"), 101);
  const auto opened = [&](const std::string& m) {
    return metric_value(m, "postern_broker_lanes_opened_total", {{"from", "edge"}}) +
           metric_value(m, "postern_broker_lanes_opened_total", {{"from", "connector"}});
  };
  const double opened_before = opened(scrape(sys.broker_admin_port));
  constexpr int kSessions = 50;
  auto held = std::async(std::launch::async, [&] {
    return ws_client({"hold", ws("chat", "/shared"), "--count", std::to_string(kSessions), "--seconds", "3"}, 30s);
  });
  EXPECT_TRUE(wait_until(
      [&] {
        return metric_value(scrape(sys.broker_admin_port), "postern_broker_websocket_sessions") == kSessions;
      },
      10s));
  const auto m = scrape(sys.broker_admin_port);
  EXPECT_EQ(metric_value(m, "postern_broker_lanes", {{"from", "edge"}}), 1) << m;
  EXPECT_EQ(metric_value(m, "postern_broker_lanes", {{"from", "connector"}}), 2) << m;
  EXPECT_EQ(opened(m), opened_before) << m;
  const auto r = held.get();
  ASSERT_TRUE(r.contains("statuses")) << json::serialize(r);
  const auto& statuses = r.at("statuses").as_array();
  EXPECT_EQ(std::count_if(statuses.begin(), statuses.end(), [](const json::value& v) { return v.as_int64() == 101; }),
            kSessions);
  EXPECT_TRUE(wait_until(
      [&] { return metric_value(scrape(sys.broker_admin_port), "postern_broker_websocket_sessions") == 0; }, 10s));
  // The lanes stay for the next sessions.
  EXPECT_EQ(metric_value(scrape(sys.broker_admin_port), "postern_broker_lanes", {{"from", "edge"}}), 1);
  EXPECT_EQ(opened(scrape(sys.broker_admin_port)), opened_before);
}

TEST_F(WebSockets, CloseCodesPropagateEndToEnd) {
  start();
  // The native service closes: the client sees its code and reason.
  const auto a = ws_client({"script", ws("chat", "/close-a"), "send=/close 4001 bye now", "wait_close=5"});
  EXPECT_EQ(num(a, "close_code"), 4001) << json::serialize(a);
  EXPECT_EQ(str(a, "close_reason"), "bye now");
  const auto b = ws_client({"script", ws("chat", "/close-b"), "send=/close 1000", "wait_close=5"});
  EXPECT_EQ(num(b, "close_code"), 1000) << json::serialize(b);
  // The client closes: the native service sees its code.
  const auto c = ws_client({"script", ws("chat", "/close-c"), "close=4002:done"});
  EXPECT_EQ(num(c, "close_code"), 4002) << json::serialize(c);
  sys.demo->wait_for_log("\"msg\":\"websocket closed\",\"path\":\"/api/demo/close-c\".*\"code\":4002", 5s);
  // A session idle past the API's idle timeout, and one past its maximum
  // lifetime, are closed by the gateway with 1001.
  const auto idle = ws_client({"script", ws("idle"), "wait_close=5"});
  EXPECT_EQ(num(idle, "close_code"), 1001) << json::serialize(idle);
  EXPECT_EQ(str(idle, "close_reason"), "idle timeout");
  const auto life = ws_client({"script", ws("short-lived"), "send=a", "recv=1", "sleep=0.6", "send=b", "recv=1",
                               "wait_close=5"});
  EXPECT_EQ(num(life, "close_code"), 1001) << json::serialize(life);
  EXPECT_EQ(str(life, "close_reason"), "maximum session lifetime reached");
  EXPECT_EQ(received(life).size(), 2u) << "traffic does not extend a lifetime";
}

TEST_F(WebSockets, LargeMessagesRoundTripAndOneOverTheLimitCloses1009) {
  start();
  const auto big = ws_client({"script", ws("sized"), "binary=2097152", "recv=1", "close=1000"});
  const auto got = received(big);
  ASSERT_EQ(got.size(), 1u) << json::serialize(big);
  const auto& sent = big.at("sent").as_array()[0].as_object();
  const auto& back = got[0].as_object();
  EXPECT_EQ(num(back, "len"), 2097152);
  EXPECT_EQ(str(back, "sha256"), str(sent, "sha256"));
  const auto over = ws_client({"script", ws("sized"), "binary=4194304", "wait_close=5"});
  EXPECT_EQ(num(over, "close_code"), 1009) << json::serialize(over);
  EXPECT_TRUE(received(over).empty());
}

// A message over the connector's limit (the edge's is larger): the
// connector closes with 1009, and lets go of the rest of the message as it
// comes, crediting it, so that the edge finishes sending and the session
// ends at once on both sides rather than when the connector stops waiting
// for the close (2 s).
TEST_F(WebSockets, AMessageOverTheConnectorsLimitEndsTheSessionPromptly) {
  connector_yaml = "max_ws_message_bytes: 1048576\nadmin: {listen: \"127.0.0.1:0\"}\n";
  start();
  const auto connector_admin = sys.connectors[0]->wait_for_port("admin");
  const auto over = ws_client({"script", ws("sized"), "binary=3145728", "wait_close=5"});
  EXPECT_EQ(num(over, "close_code"), 1009) << json::serialize(over);
  EXPECT_TRUE(received(over).empty());
  const auto closed = std::chrono::steady_clock::now();
  ASSERT_TRUE(wait_until(
      [&] {
        return metric_value(scrape(sys.edge_admin_port), "postern_edge_websocket_sessions") == 0 &&
               metric_value(scrape(connector_admin), "postern_connector_websocket_sessions") == 0;
      },
      10s));
  EXPECT_LT(std::chrono::steady_clock::now() - closed, 1s)
      << "the session waited for the connector's 2 s drain: "
      << std::chrono::duration<double>(std::chrono::steady_clock::now() - closed).count() << " s";
  // The session after it works as ever. The connector counts each session
  // as it ends, with its whole length.
  const auto next = ws_client({"script", ws("sized"), "binary=524288", "recv=1", "sleep=1", "close=1000"});
  EXPECT_EQ(received(next).size(), 1u) << json::serialize(next);
  std::string m;
  EXPECT_TRUE(wait_until(
      [&] {
        m = scrape(connector_admin);
        return metric_value(m, "postern_connector_websocket_session_duration_seconds_count", {{"alias", "demo"}}) ==
               2;
      },
      5s))
      << m;
  EXPECT_GE(metric_value(m, "postern_connector_websocket_session_duration_seconds_sum", {{"alias", "demo"}}), 1.0)
      << m;
  EXPECT_EQ(metric_value(m, "postern_connector_requests_total", {{"alias", "demo"}}), 0.0) << m;
}

TEST_F(WebSockets, TransformsChangeMessagesInBothDirections) {
  start(true);
  // Built-in edits: JSON field set and removed and text appended on the way
  // in, text prepended on the way out; binary messages too.
  const auto e = ws_client({"script", ws("edited"), R"(send={"a":1,"secret":"x"})", "recv=1", "hex=0102", "recv=1"});
  EXPECT_EQ(text_at(e, 0), R"([gw] Message Received from anonymous: {"a":1,"via":"postern"}!)") << json::serialize(e);
  ASSERT_EQ(received(e).size(), 2u) << json::serialize(e);
  EXPECT_EQ(str(received(e)[1].as_object(), "hex"), hex_of("[gw] ") + "010221");

  // The user's transform service, from the green zone: both directions; a
  // dropped message never reaches the native service.
  const auto s = ws_client({"script", ws("serviced"), "send=drop me", "send=hi", "recv=1"});
  EXPECT_EQ(text_at(s, 0), "Message Received from anonymous: [to-server] hi [to-client]") << json::serialize(s);
  // Unreachable service: fail-open passes messages unchanged; fail-closed
  // ends the session with 1011.
  const auto open = ws_client({"script", ws("fail-open"), "send=as is", "recv=1"});
  EXPECT_EQ(text_at(open, 0), "Message Received from anonymous: as is") << json::serialize(open);
  const auto closed = ws_client({"script", ws("fail-closed"), "send=x", "wait_close=5"});
  EXPECT_EQ(num(closed, "close_code"), 1011) << json::serialize(closed);
  // Past the timeout (the demo service answers "slow" after 3 s) counts as a failure.
  const auto slow = ws_client({"script", ws("serviced"), "send=slow", "wait_close=5"});
  EXPECT_EQ(num(slow, "close_code"), 1011) << json::serialize(slow);
  EXPECT_LT(num(slow, "closed_after_s"), 3) << json::serialize(slow);
}

TEST_F(WebSockets, LogInvocationStoresCompressedMessagesThatDecode) {
  start();
  const auto r = ws_client({"script", ws("logged"), "send=first line", "recv=1", "hex=00ff10", "recv=1", "close=1000"});
  ASSERT_EQ(received(r).size(), 2u) << json::serialize(r);
  std::vector<json::object> msgs;
  json::object open, close;
  ASSERT_TRUE(wait_until(
      [&] {
        msgs.clear();
        std::istringstream in(read_file(edge_log()));
        for (std::string line; std::getline(in, line);) {
          auto v = json::parse(line).as_object();
          const auto ev = str(v, "event");
          if (ev == "websocket_message") msgs.push_back(v);
          if (ev == "websocket_open") open = v;
          if (ev == "websocket_close") close = v;
        }
        return !close.empty();
      },
      5s));
  ASSERT_EQ(msgs.size(), 4u) << read_file(edge_log());
  // Each stored payload is gzip+base64 and decodes to the message.
  std::vector<std::string> decoded;
  for (const auto& m : msgs) {
    const auto& p = m.at("payload").as_object();
    EXPECT_EQ(str(p, "encoding"), "gzip+base64");
    const auto d = run_command({system_python(), "-c",
                                "import sys,base64,gzip; sys.stdout.write(gzip.decompress(base64.b64decode(sys.argv[1]))"
                                ".hex())",
                                str(p, "data")});
    decoded.push_back(str(m, "direction") + ":" + d.out);
  }
  EXPECT_EQ(decoded[0], "client_to_server:" + hex_of("first line"));
  EXPECT_EQ(decoded[1], "server_to_client:" + hex_of("Message Received from anonymous: first line"));
  EXPECT_EQ(decoded[2], "client_to_server:00ff10");
  EXPECT_EQ(decoded[3], "server_to_client:00ff10");
  EXPECT_EQ(str(open, "api"), "logged");
  EXPECT_EQ(num(open, "status"), 101);
  EXPECT_EQ(str(close, "closed_by"), "client");
  EXPECT_EQ(num(close.at("client_close").as_object(), "code"), 1000);
  EXPECT_EQ(num(close.at("client_to_server").as_object(), "messages"), 2);
  EXPECT_EQ(num(close.at("client_to_server").as_object(), "bytes"), 13);
  EXPECT_EQ(num(close.at("server_to_client").as_object(), "messages"), 2);
  EXPECT_GE(num(close, "duration_ms"), 0);
}

TEST_F(WebSockets, BrowserLoadsDemoPageThroughTheEdgeAndChats) {
  if (!std::filesystem::exists("/usr/bin/chromium")) GTEST_SKIP() << "Debian's chromium is not installed";
  start();
  // demo.html comes from the demo through the REST API, then connects
  // through the edge to the broadcast path; a Python client joins the room.
  auto page = Process::start({system_python(), source_path("tests/support/browser.py"),
                              sys.edge_url("/gateway/rest/1.0/demo.html?auto=1&user=chromium&send=hello-from-browser"),
                              "--selector", "#log", "--expect", "Message Received from chromium: hello-from-browser",
                              "--expect", "Message Received from python: hello-from-python", "--expect",
                              "Server time:", "--timeout", "20"},
                             sys.dir().file("browser.log"));
  sys.edge->wait_for_log("\"msg\":\"websocket open\".*\"api\":\"chat\"", 20s);
  const auto py = ws_client({"script", ws("chat", "/broadcast?user=python"), "send=hello-from-python", "recv=1"});
  EXPECT_EQ(num(py, "status"), 101) << json::serialize(py);
  ASSERT_TRUE(page->wait(40s).has_value());
  std::string out = page->log();
  auto v = json::parse(out.substr(0, out.find('\n'))).as_object();
  EXPECT_TRUE(v.at("ok").as_bool()) << out;
}

// Identification by JWT bearer token and by client IP at the upgrade.
TEST(WebSocketIdentify, JwtAndIpAtTheUpgrade) {
  System sys;
  auto key = make_rsa_key();
  write_file(sys.dir().file("jwks.json"), jwks({rsa_jwk(key.get(), "k1")}));
  const long now = static_cast<long>(std::time(nullptr));
  auto token = [&](const std::string& sub, long exp) {
    return signed_jwt(key.get(), R"({"alg":"RS256","kid":"k1","typ":"JWT"})",
                      R"({"sub":")" + sub + R"(","iss":"https://idp.test","exp":)" + std::to_string(exp) + "}");
  };
  sys.start_demo();
  sys.start_policy(R"(apis:
  - name: ws-jwt
    version: "1.0"
    type: websocket
    routing: apigateway://demo/ws/jwt
    policies:
      identify:
        identifiers: [JWT]
        jwt: {jwks_file: jwks.json, issuer: "https://idp.test"}
  - name: ws-ip
    version: "1.0"
    type: websocket
    routing: apigateway://demo/ws/ip
    policies:
      identify: {identifiers: [IP]}
applications:
  - {name: service-a, jwt_subjects: [svc-a], apis: [ws-jwt]}
  - {name: loopback, ip_ranges: [127.0.0.0/8], apis: [ws-ip]}
)");
  sys.start_broker();
  sys.start_connector();
  sys.start_edge();
  const std::string base = "ws://127.0.0.1:" + std::to_string(sys.edge_port) + "/gateway/";
  const auto valid = ws_client({"script", "--header", "Authorization: Bearer " + token("svc-a", now + 300),
                                base + "ws-jwt/1.0/", "send=jwt", "recv=1"});
  EXPECT_EQ(num(valid, "status"), 101) << json::serialize(valid);
  EXPECT_EQ(first_text(valid), "Message Received from anonymous: jwt");
  const auto expired = ws_client({"script", "--header", "Authorization: Bearer " + token("svc-a", now - 600),
                                  base + "ws-jwt/1.0/"});
  EXPECT_EQ(num(expired, "status"), 401) << json::serialize(expired);
  const auto stranger = ws_client({"script", "--header", "Authorization: Bearer " + token("svc-x", now + 300),
                                   base + "ws-jwt/1.0/"});
  EXPECT_EQ(num(stranger, "status"), 401) << json::serialize(stranger);
  EXPECT_EQ(num(ws_client({"script", base + "ws-jwt/1.0/"}), "status"), 401);
  EXPECT_EQ(num(ws_client({"script", base + "ws-ip/1.0/"}), "status"), 101);
}

// The connector dies or drains under a live session: the client is closed
// promptly (1011 or 1001), never left hanging.
TEST(WebSocketFaults, KillingOrDrainingTheConnectorOrDrainingTheBrokerClosesTheClientPromptly) {
  System sys;
  std::filesystem::create_directories(sys.dir().file("keys"));
  write_file(sys.dir().file("keys/alpha"), kKey);
  sys.start_demo();
  sys.start_policy(kPolicies);
  sys.start_broker();
  sys.start_connector();
  sys.start_edge();
  const std::string url = "ws://127.0.0.1:" + std::to_string(sys.edge_port) + "/gateway/chat/1.0/kill";

  // std::async: the future's destructor waits for the client, whatever fails.
  auto client = std::async(std::launch::async, [&] { return ws_client({"script", url, "send=x", "recv=1", "wait_close=10"}); });
  ASSERT_TRUE(wait_until([&] { return sys.demo->count_log("\"msg\":\"websocket open\"") >= 1; }, 10s));
  std::this_thread::sleep_for(300ms);
  auto t0 = std::chrono::steady_clock::now();
  sys.connectors[0]->signal(SIGKILL);
  const auto killed = client.get();
  EXPECT_EQ(num(killed, "close_code"), 1011) << json::serialize(killed);
  // The client's process has ended too (interpreter exit included) well within 2 s.
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);

  auto& second = sys.start_connector({.id = "connector-2"});
  auto client2 = std::async(std::launch::async, [&] { return ws_client({"script", url, "send=y", "recv=1", "wait_close=10"}); });
  ASSERT_TRUE(wait_until([&] { return sys.demo->count_log("\"msg\":\"websocket open\"") >= 2; }, 10s));
  std::this_thread::sleep_for(300ms);
  t0 = std::chrono::steady_clock::now();
  second.signal(SIGTERM);
  const auto drained = client2.get();
  EXPECT_EQ(num(drained, "close_code"), 1001) << json::serialize(drained);
  EXPECT_EQ(str(drained, "close_reason"), "connector draining");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  EXPECT_EQ(second.wait(10s), std::optional<int>(0));

  // A draining broker closes the sessions through it with 1001 at once
  // (both sides), rather than cutting them when it stops.
  sys.start_connector({.id = "connector-3"});
  auto client3 = std::async(std::launch::async, [&] { return ws_client({"script", url, "send=z", "recv=1", "wait_close=10"}); });
  ASSERT_TRUE(wait_until([&] { return sys.demo->count_log("\"msg\":\"websocket open\"") >= 3; }, 10s));
  std::this_thread::sleep_for(300ms);
  t0 = std::chrono::steady_clock::now();
  sys.broker->signal(SIGTERM);
  const auto broker_drained = client3.get();
  EXPECT_EQ(num(broker_drained, "close_code"), 1001) << json::serialize(broker_drained);
  EXPECT_EQ(str(broker_drained, "close_reason"), "broker draining");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  sys.demo->wait_for_log("\"msg\":\"websocket closed\",\"path\":\"/api/demo/kill\".*\"code\":1001", 5s);
  EXPECT_EQ(sys.broker->wait(15s), std::optional<int>(0));
}

// wss on the external port, and to a wss native service.
TEST(WebSocketTls, WssOnTheExternalPortAndToAWssNativeService) {
  System sys;
  sys.start_demo();
  const auto& certs = sys.certs();
  auto tls_demo = Process::start({binary_path("postern-demo"), "--listen", "127.0.0.1:0", "--tls-cert",
                                  certs.native_crt, "--tls-key", certs.native_key},
                                 sys.dir().file("tls-demo.log"));
  const auto tls_port = tls_demo->wait_for_port("http");
  sys.start_policy(R"(apis:
  - {name: chat, version: "1.0", type: websocket, routing: "apigateway://demo/api/demo/"}
  - {name: secure-chat, version: "1.0", type: websocket, routing: "apigateway://other/api/demo/"}
)");
  sys.start_broker();
  ConnectorOptions o;
  o.aliases = {{"demo", sys.demo_url("")}, {"other", "wss://localhost:" + std::to_string(tls_port)}};
  sys.start_connector(o);
  sys.edge_tls = true;
  sys.start_edge("", "apis: []\n");
  const std::string base = "wss://localhost:" + std::to_string(sys.edge_port) + "/gateway/";
  const auto a = ws_client({"script", "--ca", certs.ca, base + "chat/1.0/tls?user=t", "send=over wss", "recv=1"});
  EXPECT_EQ(first_text(a), "Message Received from t: over wss") << json::serialize(a);
  const auto b = ws_client({"script", "--ca", certs.ca, base + "secure-chat/1.0/tls?user=t", "send=wss both ways",
                            "recv=1", "send=/close 4003 tls bye", "wait_close=5"});
  EXPECT_EQ(first_text(b), "Message Received from t: wss both ways") << json::serialize(b);
  EXPECT_EQ(num(b, "close_code"), 4003);
  EXPECT_NE(tls_demo->log().find("\"path\":\"/api/demo/tls\""), std::string::npos) << tls_demo->log_tail();
  // A client that does not trust the edge's certificate gets no session.
  const auto untrusted = ws_client({"script", base + "chat/1.0/tls"});
  EXPECT_NE(str(untrusted, "error").find("CERTIFICATE_VERIFY_FAILED"), std::string::npos) << json::serialize(untrusted);
}

}  // namespace
}  // namespace postern::testing
