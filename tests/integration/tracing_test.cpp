// Tracing: W3C trace context crosses every hop (edge, broker, connector) to
// the native service, every log record of the exchange names its trace,
// and each hop exports its span over OTLP/HTTP JSON to a collector (a small
// one, tests/support/otlp_collector.py) without a request ever waiting.

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "support/http.hpp"
#include "support/process.hpp"
#include "support/system.hpp"
#include "support/ws.hpp"

namespace postern::testing {
namespace {

namespace json = boost::json;
using namespace std::chrono_literals;

struct Span {
  std::string service, trace_id, span_id, parent, name;
  int kind = 0;
  json::object attributes;  // key -> value object
  int status = 0;
};

// Every span the collector received, from every export.
std::vector<Span> spans(const Process& collector) {
  std::vector<Span> out;
  std::istringstream in(collector.log());
  std::string line;
  while (std::getline(in, line)) {
    if (line.find("\"msg\":\"export\"") == std::string::npos) continue;
    const auto rec = json::parse(line).as_object();
    EXPECT_EQ(rec.at("path").as_string(), "/v1/traces");
    EXPECT_EQ(rec.at("content_type").as_string(), "application/json");
    for (const auto& rs : rec.at("body").at("resourceSpans").as_array()) {
      std::string service;
      for (const auto& a : rs.at("resource").at("attributes").as_array()) {
        if (a.at("key").as_string() == "service.name") service = a.at("value").at("stringValue").as_string().c_str();
      }
      for (const auto& ss : rs.at("scopeSpans").as_array()) {
        for (const auto& sv : ss.at("spans").as_array()) {
          const auto& s = sv.as_object();
          Span span;
          span.service = service;
          span.trace_id = s.at("traceId").as_string().c_str();
          span.span_id = s.at("spanId").as_string().c_str();
          if (s.contains("parentSpanId")) span.parent = s.at("parentSpanId").as_string().c_str();
          span.name = s.at("name").as_string().c_str();
          span.kind = static_cast<int>(s.at("kind").as_int64());
          for (const auto& a : s.at("attributes").as_array()) {
            span.attributes[a.at("key").as_string()] = a.at("value");
          }
          span.status = static_cast<int>(s.at("status").at("code").as_int64());
          EXPECT_LE(std::stoull(std::string(s.at("startTimeUnixNano").as_string())),
                    std::stoull(std::string(s.at("endTimeUnixNano").as_string())));
          out.push_back(std::move(span));
        }
      }
    }
  }
  return out;
}

std::vector<Span> of_trace(const std::vector<Span>& all, const std::string& trace_id) {
  std::vector<Span> out;
  for (const auto& s : all) {
    if (s.trace_id == trace_id) out.push_back(s);
  }
  return out;
}

std::string tracing_yaml(std::uint16_t port) {
  return "tracing: {endpoint: \"http://127.0.0.1:" + std::to_string(port) + "\", flush_interval: 100ms}\n";
}

// The traceparent the native service received, from /headers' echo.
std::string received_traceparent(const std::string& body) {
  const auto echo = json::parse(body).as_object();
  std::string found;
  for (const auto& h : echo.at("headers").as_array()) {
    const auto& pair = h.as_array();
    if (pair.at(0).as_string() == "traceparent") {
      EXPECT_TRUE(found.empty()) << "one traceparent only: " << body;
      found = pair.at(1).as_string().c_str();
    }
  }
  return found;
}

// The whole path with every hop exporting to one collector.
class Tracing : public ::testing::Test {
 protected:
  void start_collector(bool hang = false) {
    std::vector<std::string> argv{system_python(), source_path("tests/support/otlp_collector.py")};
    if (hang) argv.push_back("--hang");
    collector = Process::start(argv, sys.dir().file("collector.log"));
    port = collector->wait_for_port("collector");
  }
  // demo, policy (the default APIs and a WebSocket API, chat), broker,
  // connector and edge, each exporting every 100 ms.
  void start_traced() {
    start_collector();
    sys.start_demo();
    sys.start_policy(System::default_policy_yaml() +
                     "  - {name: chat, version: \"1.0\", type: websocket, routing: \"apigateway://demo/api/demo/\"}\n");
    sys.start_broker(tracing_yaml(port));
    ConnectorOptions c;
    c.extra_yaml = tracing_yaml(port);
    sys.start_connector(c);
    sys.start_edge(tracing_yaml(port));
  }

  System sys;
  std::uint16_t port = 0;
  std::unique_ptr<Process> collector;
};

TEST_F(Tracing, OneRequestIsOneSpanTreeFromTheClientToTheNativeService) {
  start_traced();

  const std::string trace = "4bf92f3577b34da6a3ce929d0e0e4736";
  const std::string client_span = "00f067aa0ba902b7";
  const std::string id = "trace-test-1";
  auto r = curl({"-H", "traceparent: 00-" + trace + "-" + client_span + "-01", "-H", "tracestate: vendor=opaque",
                 "-H", "X-Request-Id: " + id, sys.edge_url("/gateway/demo/1.0/headers")});
  ASSERT_EQ(r.status, 200) << r.body;

  // The native service sees the trace, with the connector's call as parent.
  const std::string seen = received_traceparent(r.body);
  ASSERT_EQ(seen.size(), 55u) << r.body;
  EXPECT_EQ(seen.substr(0, 36), "00-" + trace + "-");
  EXPECT_EQ(seen.substr(52), "-01");
  EXPECT_NE(r.body.find("vendor=opaque"), std::string::npos) << "tracestate goes along: " << r.body;
  const std::string native_parent = seen.substr(36, 16);

  // Four spans, one per hop and the native call, in one tree.
  std::vector<Span> got;
  ASSERT_TRUE(wait_until([&] { return of_trace(got = spans(*collector), trace).size() >= 4; }, 10s))
      << collector->log_tail();
  got = of_trace(got, trace);
  ASSERT_EQ(got.size(), 4u);
  std::map<std::string, Span> by_service;
  Span native;
  for (const auto& s : got) {
    if (s.kind == 3) native = s;  // CLIENT
    else by_service[s.service] = s;
  }
  ASSERT_EQ(by_service.size(), 3u);
  const Span& edge = by_service.at("postern-edge");
  const Span& broker = by_service.at("postern-broker");
  const Span& connector = by_service.at("postern-connector");
  EXPECT_EQ(edge.parent, client_span);
  EXPECT_EQ(broker.parent, edge.span_id);
  EXPECT_EQ(connector.parent, broker.span_id);
  EXPECT_EQ(native.service, "postern-connector");
  EXPECT_EQ(native.parent, connector.span_id);
  EXPECT_EQ(native.span_id, native_parent);
  for (const Span* s : {&edge, &broker, &connector}) EXPECT_EQ(s->kind, 2) << s->service;  // SERVER
  EXPECT_EQ(edge.name, "GET demo");
  EXPECT_EQ(edge.attributes.at("http.response.status_code").at("intValue").as_string(), "200");
  EXPECT_EQ(edge.attributes.at("postern.request_id").at("stringValue").as_string(), id);
  EXPECT_EQ(connector.attributes.at("postern.alias").at("stringValue").as_string(), "demo");
  EXPECT_EQ(native.attributes.at("http.response.status_code").at("intValue").as_string(), "200");
  for (const auto& s : got) EXPECT_EQ(s.status, 0) << s.name;

  // Every log record of the exchange, on every hop, names the trace.
  for (Process* p : {sys.edge.get(), sys.broker.get(), sys.connectors[0].get()}) {
    const std::string line = p->wait_for_log("\"msg\":\"request\".*\"request_id\":\"" + id + "\"", 5s);
    EXPECT_NE(line.find("\"trace_id\":\"" + trace + "\""), std::string::npos) << line;
  }
}

TEST_F(Tracing, ARequestWithoutAValidTraceparentStartsATrace) {
  start_traced();
  // None, an upper-case one, version ff, an all-zero trace id, and two at
  // once: each starts a new trace, and a tracestate without a valid parent
  // is dropped.
  const std::vector<std::vector<std::string>> cases = {
      {},
      {"-H", "traceparent: 00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"},
      {"-H", "traceparent: ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
      {"-H", "traceparent: 00-00000000000000000000000000000000-00f067aa0ba902b7-01"},
      {"-H", "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "-H",
       "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
  };
  std::vector<std::string> traces;
  for (const auto& extra : cases) {
    std::vector<std::string> args = extra;
    args.insert(args.end(), {"-H", "tracestate: vendor=dropped", sys.edge_url("/gateway/demo/1.0/headers")});
    auto r = curl(args);
    ASSERT_EQ(r.status, 200) << r.body;
    const std::string seen = received_traceparent(r.body);
    ASSERT_TRUE(std::regex_match(seen, std::regex("00-[0-9a-f]{32}-[0-9a-f]{16}-01"))) << seen;
    const std::string trace = seen.substr(3, 32);
    EXPECT_NE(trace, "4bf92f3577b34da6a3ce929d0e0e4736");
    EXPECT_EQ(r.body.find("vendor=dropped"), std::string::npos) << r.body;
    traces.push_back(trace);
  }
  for (const auto& trace : traces) {
    std::vector<Span> got;
    ASSERT_TRUE(wait_until([&] { return of_trace(got = spans(*collector), trace).size() >= 4; }, 10s)) << trace;
    got = of_trace(got, trace);
    int roots = 0;
    for (const auto& s : got) roots += s.parent.empty() ? 1 : 0;
    EXPECT_EQ(roots, 1) << "the edge's span is the root";
  }
  // A request that is not sampled (flags 00) keeps its trace and is not exported.
  const std::string unsampled = "0af7651916cd43dd8448eb211c80319c";
  auto r = curl({"-H", "traceparent: 00-" + unsampled + "-b7ad6b7169203331-00", sys.edge_url("/gateway/demo/1.0/headers")});
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(received_traceparent(r.body).substr(0, 36), "00-" + unsampled + "-");
  EXPECT_EQ(received_traceparent(r.body).substr(52), "-00");
  // A later sampled request's spans arrive; the unsampled one's never do.
  const std::string later = "11111111111111111111111111111111";
  ASSERT_EQ(curl({"-H", "traceparent: 00-" + later + "-b7ad6b7169203331-01", sys.edge_url("/gateway/demo/1.0/headers")})
                .status,
            200);
  ASSERT_TRUE(wait_until([&] { return of_trace(spans(*collector), later).size() >= 4; }, 10s));
  EXPECT_TRUE(of_trace(spans(*collector), unsampled).empty());
}

TEST_F(Tracing, DmzLocalApisAndWebSocketsAreTracedAndFailuresMarked) {
  start_traced();
  // A DMZ-local API: the edge's span and its own call to the service.
  const std::string local = "22222222222222222222222222222222";
  auto r = curl({"-H", "traceparent: 00-" + local + "-b7ad6b7169203331-01", sys.edge_url("/gateway/local/1.0/headers")});
  ASSERT_EQ(r.status, 200) << r.body;
  std::vector<Span> got;
  ASSERT_TRUE(wait_until([&] { return of_trace(got = spans(*collector), local).size() >= 2; }, 10s));
  got = of_trace(got, local);
  ASSERT_EQ(got.size(), 2u);
  const Span& server = got[0].kind == 2 ? got[0] : got[1];
  const Span& call = got[0].kind == 2 ? got[1] : got[0];
  EXPECT_EQ(call.kind, 3);
  EXPECT_EQ(call.parent, server.span_id);
  EXPECT_EQ(received_traceparent(r.body).substr(36, 16), call.span_id);

  // A native 503 marks the connector's and edge's spans as failed.
  const std::string failed = "33333333333333333333333333333333";
  r = curl({"-H", "traceparent: 00-" + failed + "-b7ad6b7169203331-01", sys.edge_url("/gateway/demo/1.0/status/503")});
  ASSERT_EQ(r.status, 503);
  ASSERT_TRUE(wait_until([&] { return of_trace(got = spans(*collector), failed).size() >= 4; }, 10s));
  for (const auto& s : of_trace(got, failed)) {
    if (s.service != "postern-broker") EXPECT_EQ(s.status, 2) << s.service << " " << s.name;
  }

  // A WebSocket session: one tree as well, the native call being the upgrade.
  const auto session = ws_client(
      {"script", "ws://127.0.0.1:" + std::to_string(sys.edge_port) + "/gateway/chat/1.0/", "send=hello", "close=1000"});
  ASSERT_EQ(session.at("status").as_int64(), 101) << json::serialize(session);
  ASSERT_TRUE(wait_until(
      [&] {
        int upgrades = 0;
        for (const auto& s : spans(*collector)) {
          if (s.attributes.contains("http.response.status_code") &&
              s.attributes.at("http.response.status_code").at("intValue").as_string() == "101") {
            ++upgrades;
          }
        }
        return upgrades >= 3;  // the edge's, the connector's and its call
      },
      10s))
      << collector->log_tail();
}

TEST_F(Tracing, AStuckOrAbsentCollectorNeverHoldsARequest) {
  start_collector(/*hang=*/true);
  sys.start_demo();
  // The broker exports to the stuck collector, the connector to a port
  // nothing listens on; both with a small queue.
  const std::string small = ", max_queued_spans: 8, max_batch_spans: 4, timeout: 300ms";
  sys.start_broker("tracing: {endpoint: \"http://127.0.0.1:" + std::to_string(port) + "\", flush_interval: 50ms" +
                   small + "}\n");
  ConnectorOptions c;
  c.extra_yaml = "tracing: {endpoint: \"http://127.0.0.1:1/v1/traces\", flush_interval: 50ms" + small + "}\n";
  sys.start_connector(c);
  sys.start_edge();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 100; ++i) {
    auto r = curl({sys.edge_url("/gateway/demo/1.0/headers")}, 10s);
    ASSERT_EQ(r.status, 200) << i;
  }
  // 100 requests took as long as requests take, not 100 export timeouts.
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 30s);
  // Dropped and counted, with a warning once per outage.
  auto dropped = [&](std::uint16_t admin) {
    const std::string metrics = scrape(admin);
    return metric_value(metrics, "postern_trace_spans_dropped_total", {{"reason", "export_failed"}}) +
           metric_value(metrics, "postern_trace_spans_dropped_total", {{"reason", "queue_full"}});
  };
  std::uint16_t connector_admin = sys.connectors[0]->wait_for_port("admin");
  EXPECT_TRUE(wait_until([&] { return dropped(sys.broker_admin_port) >= 90; }, 10s));
  EXPECT_TRUE(wait_until([&] { return dropped(connector_admin) >= 180; }, 10s));  // its span and the call
  EXPECT_EQ(sys.connectors[0]->count_log("\"msg\":\"span export failed\""), 1) << sys.connectors[0]->log_tail();
}

TEST_F(Tracing, CheckConfigNamesABadTracingBlock) {
  const std::string cfg = sys.dir().file("edge-bad-tracing.yaml");
  write_file(cfg,
             "id: e\nlisteners: [{listen: \"127.0.0.1:0\"}]\nbroker: {address: \"127.0.0.1:1\"}\n"
             "tracing: {endpoint: \"grpc://collector:4317\", sample_ratio: 1.5, ca_file: \"/nonexistent/ca.pem\"}\n");
  auto p = Process::start({binary_path("postern-edge"), "--config", cfg, "--check-config"},
                          sys.dir().file("check.log"));
  ASSERT_EQ(p->wait(20s), 2);
  const std::string out = p->log();
  EXPECT_NE(out.find("tracing.endpoint: URL 'grpc://collector:4317' must start with http:// or https://"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("tracing.sample_ratio: must be from 0 to 1"), std::string::npos) << out;
  EXPECT_NE(out.find("tracing.ca_file"), std::string::npos) << out;
}

}  // namespace
}  // namespace postern::testing
