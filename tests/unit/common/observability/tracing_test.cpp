#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <boost/json.hpp>
#include <mutex>

#include "common/observability/log.hpp"
#include "common/observability/otlp_exporter.hpp"
#include "common/observability/trace_context.hpp"
#include "common/observability/tracing.hpp"

namespace postern::tracing {
namespace {

namespace json = boost::json;

constexpr std::string_view kValid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

TEST(TraceContext, ParsesOnlyWellFormedTraceparents) {
  const auto c = parse_traceparent(kValid);
  ASSERT_TRUE(c);
  EXPECT_EQ(to_hex(c->trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_EQ(to_hex(c->span_id), "00f067aa0ba902b7");
  EXPECT_TRUE(c->sampled());
  EXPECT_EQ(format_traceparent(c->trace_id, c->span_id, c->flags), kValid);
  // A later version is read by its first four fields.
  EXPECT_TRUE(parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future"));
  EXPECT_TRUE(parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
  for (std::string_view bad : {
           "",
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",     // version 00 has no more fields
           "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",     // a later one adds them after '-'
           "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",      // version ff is invalid
           "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",      // upper case
           "00-00000000000000000000000000000000-00f067aa0ba902b7-01",      // zero trace id
           "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",      // zero span id
           "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",      // separators
           "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",      // field lengths
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",      // not hex
           "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
       }) {
    EXPECT_FALSE(parse_traceparent(bad)) << bad;
  }
}

Headers headers(std::initializer_list<std::pair<std::string, std::string>> fields) {
  Headers h;
  for (const auto& [name, value] : fields) {
    auto* f = h.Add();
    f->set_name(name);
    f->set_value(value);
  }
  return h;
}

TEST(TraceContext, ReadsOneValidTraceparentAndItsTracestate) {
  auto in = read_headers(headers({{"TraceParent", std::string(kValid)}, {"tracestate", "a=1"}, {"tracestate", "b=2"}}));
  ASSERT_TRUE(in.parent);
  EXPECT_EQ(in.tracestate, "a=1,b=2");
  // Two traceparents are none; a tracestate without a valid parent is dropped.
  in = read_headers(headers({{"traceparent", std::string(kValid)}, {"traceparent", std::string(kValid)},
                             {"tracestate", "a=1"}}));
  EXPECT_FALSE(in.parent);
  EXPECT_EQ(in.tracestate, "");
  // A tracestate over 512 bytes is dropped, the parent kept.
  in = read_headers(headers({{"traceparent", std::string(kValid)}, {"tracestate", "a=" + std::string(600, 'x')}}));
  EXPECT_TRUE(in.parent);
  EXPECT_EQ(in.tracestate, "");
  EXPECT_EQ(trace_id_in(headers({{"x", "y"}, {"traceparent", std::string(kValid)}})),
            "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_EQ(trace_id_in(headers({{"x", "y"}})), "");
}

TEST(TraceContext, WritesExactlyOneTraceparentInPlaceOfTheFirst) {
  auto h = headers({{"a", "1"}, {"traceparent", "x"}, {"b", "2"}, {"TRACEPARENT", "y"}, {"tracestate", "s=1"}});
  write_traceparent(h, std::string(kValid), true);
  ASSERT_EQ(h.size(), 4);
  EXPECT_EQ(h[1].value(), kValid);
  EXPECT_EQ(h[2].name(), "b");
  EXPECT_EQ(h[3].name(), "tracestate");
  write_traceparent(h, std::string(kValid), false);
  EXPECT_EQ(h.size(), 3);  // the tracestate went
  auto none = headers({{"a", "1"}});
  write_traceparent(none, std::string(kValid), false);
  ASSERT_EQ(none.size(), 2);
  EXPECT_EQ(none[1].name(), "traceparent");
}

TEST(TraceContext, NewIdsAreRandomAndNeverZero) {
  const auto a = new_trace_id(), b = new_trace_id();
  EXPECT_NE(a, b);
  EXPECT_NE(a, TraceId{});
  EXPECT_NE(new_span_id(), SpanId{});
}

// Collects ended spans.
class Collect final : public SpanSink {
 public:
  void submit(std::unique_ptr<SpanData> span) override {
    std::lock_guard lock(mutex_);
    spans.push_back(std::move(span));
  }
  std::vector<std::unique_ptr<SpanData>> spans;

 private:
  std::mutex mutex_;
};

class SpanTest : public ::testing::Test {
 protected:
  void SetUp() override { set_sink(&sink); }
  void TearDown() override {
    remove_sink(&sink);
    set_sample_ratio(1.0);
  }
  Collect sink;
};

TEST_F(SpanTest, AChildOfTheIncomingParentAndOfItsOwnSpans) {
  const Incoming in = incoming(1, kValid, "v=1");
  Span span = Span::begin("edge", Kind::server, in);
  EXPECT_EQ(span.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
  const auto sent = parse_traceparent(span.traceparent());
  ASSERT_TRUE(sent);
  EXPECT_NE(to_hex(sent->span_id), "00f067aa0ba902b7");  // its own span is the parent now
  {
    Span call = span.child("GET", Kind::client);
    call.attr("http.response.status_code", 200);
  }
  span.attr("postern.api", "demo").fail("answered 503");
  span.end();
  span.end();  // once only
  ASSERT_EQ(sink.spans.size(), 2u);
  const SpanData& call = *sink.spans[0];
  const SpanData& edge = *sink.spans[1];
  EXPECT_EQ(to_hex(edge.parent_id), "00f067aa0ba902b7");
  EXPECT_EQ(edge.span_id, sent->span_id);
  EXPECT_EQ(call.parent_id, edge.span_id);
  EXPECT_EQ(call.trace_id, edge.trace_id);
  EXPECT_EQ(edge.tracestate, "v=1");
  EXPECT_TRUE(edge.error);
  EXPECT_LE(edge.start_unix_ns, edge.end_unix_ns);
  EXPECT_EQ(call.kind, Kind::client);
}

TEST_F(SpanTest, UnsampledTracesKeepTheirIdsAndAreNotRecorded) {
  Span span = Span::begin("edge", Kind::server, incoming(1, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", ""));
  EXPECT_FALSE(span.recording());
  EXPECT_TRUE(span.traceparent().ends_with("-00"));
  span.end();
  set_sample_ratio(0.0);
  Span fresh = Span::begin("edge", Kind::server, Incoming{});
  EXPECT_EQ(fresh.trace_id().size(), 32u);
  EXPECT_FALSE(fresh.recording());
  fresh.end();
  EXPECT_TRUE(sink.spans.empty());
}

TEST_F(SpanTest, NothingIsRecordedWithoutASink) {
  remove_sink(&sink);
  Span span = Span::begin("edge", Kind::server, Incoming{});
  EXPECT_FALSE(span.recording());
  EXPECT_EQ(span.trace_id().size(), 32u);
}

TEST_F(SpanTest, AnExchangeSpanIsNamedAndJudgedFromItsLogRecord) {
  auto attr = [](const SpanData& d, const std::string& key) {
    for (const auto& a : d.attributes) {
      if (a.key == key) return a.is_number ? std::to_string(a.number) : a.text;
    }
    return std::string("(none)");
  };
  {
    Span span = Span::begin("edge", Kind::server, Incoming{});
    log::ExchangeRecord rec;
    rec.method = "GET";
    rec.api = "demo";
    rec.path = "/gateway/demo/1.0/x";
    rec.status = 503;
    end_exchange(span, rec);
    EXPECT_EQ(rec.trace_id, span.trace_id());
  }
  {
    Span span = Span::begin("relay", Kind::server, Incoming{});
    log::ExchangeRecord rec;
    rec.alias = "orders";
    rec.result = "no_connector";
    end_exchange(span, rec);
  }
  {
    Span span = Span::begin("relay", Kind::server, Incoming{});
    log::ExchangeRecord rec;
    rec.api = "demo";
    rec.alias = "demo";
    rec.result = "client_gone";
    end_exchange(span, rec);
  }
  {
    Span call = Span::begin("call", Kind::client, Incoming{});
    end_call(call, 200);
  }
  ASSERT_EQ(sink.spans.size(), 4u);
  EXPECT_EQ(sink.spans[0]->name, "GET demo");
  EXPECT_TRUE(sink.spans[0]->error);
  EXPECT_EQ(attr(*sink.spans[0], "http.response.status_code"), "503");
  EXPECT_EQ(attr(*sink.spans[0], "url.path"), "/gateway/demo/1.0/x");
  EXPECT_EQ(attr(*sink.spans[0], "postern.alias"), "(none)");  // fields a hop does not know are left out
  EXPECT_EQ(sink.spans[1]->name, "relay orders");
  EXPECT_TRUE(sink.spans[1]->error);
  EXPECT_EQ(sink.spans[1]->status_message, "no_connector");
  EXPECT_EQ(sink.spans[2]->name, "relay demo");
  EXPECT_FALSE(sink.spans[2]->error);  // the client went away: not the hop's failure
  EXPECT_FALSE(sink.spans[3]->error);
  EXPECT_EQ(attr(*sink.spans[3], "http.response.status_code"), "200");
}

TEST(OtlpJson, EncodesSpansAsTheProtocolsJsonMappingDoes) {
  std::vector<std::unique_ptr<SpanData>> spans;
  auto s = std::make_unique<SpanData>();
  s->trace_id = parse_traceparent(kValid)->trace_id;
  s->span_id = {1, 2, 3, 4, 5, 6, 7, 8};
  s->name = "GET \"demo\"";
  s->kind = Kind::server;
  s->start_unix_ns = 1700000000000000000ull;
  s->end_unix_ns = 1700000000000000001ull;
  s->attributes.push_back({"http.response.status_code", "", 503, true});
  s->attributes.push_back({"postern.api", "demo", 0, false});
  s->error = true;
  s->status_message = "answered 503";
  spans.push_back(std::move(s));
  const auto doc = json::parse(encode_otlp_json({"postern-edge", "edge-1", "0.1.0"}, spans)).as_object();
  const auto& rs = doc.at("resourceSpans").at(0);
  EXPECT_EQ(rs.at("resource").at("attributes").at(0).at("value").at("stringValue").as_string(), "postern-edge");
  const auto& span = rs.at("scopeSpans").at(0).at("spans").at(0).as_object();
  EXPECT_EQ(span.at("traceId").as_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_EQ(span.at("spanId").as_string(), "0102030405060708");
  EXPECT_FALSE(span.contains("parentSpanId"));  // a root
  EXPECT_EQ(span.at("name").as_string(), "GET \"demo\"");
  EXPECT_EQ(span.at("kind").as_int64(), 2);
  EXPECT_EQ(span.at("startTimeUnixNano").as_string(), "1700000000000000000");
  EXPECT_EQ(span.at("attributes").at(0).at("value").at("intValue").as_string(), "503");
  EXPECT_EQ(span.at("attributes").at(1).at("value").at("stringValue").as_string(), "demo");
  EXPECT_EQ(span.at("status").at("code").as_int64(), 2);
  EXPECT_EQ(span.at("status").at("message").as_string(), "answered 503");
}

double counter(prometheus::Registry& registry, const std::string& name, const std::string& reason) {
  double total = 0;
  for (const auto& family : registry.Collect()) {
    if (family.name != name) continue;
    for (const auto& m : family.metric) {
      for (const auto& l : m.label) {
        if (l.name == "reason" && l.value == reason) total += m.counter.value;
      }
    }
  }
  return total;
}

TEST(OtlpExporter, ABoundedQueueDropsAndCountsWhatItCannotHold) {
  prometheus::Registry registry;
  ExporterOptions o;
  o.endpoint = "http://127.0.0.1:1";  // nothing listens
  o.max_queued = 4;
  o.max_batch = 100;
  o.flush_interval = std::chrono::hours(1);
  o.timeout = std::chrono::milliseconds(500);
  OtlpExporter exporter(o, {"postern-test", "t", "0"}, registry);
  for (int i = 0; i < 10; ++i) exporter.submit(std::make_unique<SpanData>());
  EXPECT_EQ(counter(registry, "postern_trace_spans_dropped_total", "queue_full"), 6);
  // Stopping sends what is queued: it fails here, and is counted so.
  exporter.stop(std::chrono::seconds(5));
  EXPECT_EQ(counter(registry, "postern_trace_spans_dropped_total", "export_failed"), 4);
  exporter.submit(std::make_unique<SpanData>());  // after stop: dropped, not queued
  EXPECT_EQ(counter(registry, "postern_trace_spans_dropped_total", "queue_full"), 7);
}

TEST(OtlpExporter, RefusesAnEndpointThatIsNotAUrl) {
  prometheus::Registry registry;
  ExporterOptions o;
  o.endpoint = "collector:4318";
  EXPECT_THROW(OtlpExporter(o, {}, registry), std::invalid_argument);
}

}  // namespace
}  // namespace postern::tracing
