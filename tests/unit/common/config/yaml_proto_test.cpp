#include "common/config/yaml_proto.hpp"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/duration.pb.h>
#include <google/protobuf/dynamic_message.h>
#include <google/protobuf/text_format.h>
#include <gtest/gtest.h>
#include <gmock/gmock.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "postern/config/v1/config.pb.h"
#include "postern/policy/v1/policy.pb.h"

namespace postern::config {
namespace {

namespace pb = google::protobuf;
using namespace std::chrono_literals;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using ::testing::SizeIs;

/// Raw-string helper: drops the newline after R"( so line 1 is the first line.
std::string yaml(const char* text) {
  std::string s(text);
  if (!s.empty() && s.front() == '\n') s.erase(0, 1);
  return s;
}

/// Loads `text` expecting failure; returns the collected errors.
std::vector<std::string> errors_of(const std::string& text, std::string_view name, pb::Message& msg) {
  try {
    load_yaml_string(text, name, msg);
  } catch (const ConfigError& e) {
    return e.errors();
  }
  ADD_FAILURE() << "expected a ConfigError for:\n" << text;
  return {};
}

template <class M>
std::vector<std::string> errors_of(const std::string& text, std::string_view name = "edge.yaml") {
  M msg;
  return errors_of(text, name, msg);
}

// ---------------------------------------------------------------- valid files

TEST(YamlProto, LoadsFullEdgeConfig) {
  v1::EdgeConfig cfg;
  load_yaml_string(yaml(R"(
id: edge-1
admin:
  listen: 127.0.0.1:9901
log:
  level: debug
listeners:
  - listen: 0.0.0.0:8080
  - listen: 0.0.0.0:8443
    tls:
      cert_file: /etc/postern/edge.crt
      key_file: /etc/postern/edge.key
public_url: https://api.example.com
broker:
  address: broker:7444
  tls:
    ca_file: /etc/postern/ca.crt
    server_name: broker.internal
apis:
  - name: orders
    version: v1
    routing: apigateway://orders/api
    timeout: 30s
  - name: weather
    version: "2"
    base_path: /wx
    routing: https://weather.example.com/v2
    ca_file: /etc/ssl/wx.pem
default_alias: fallback
upstream_timeout: 1m
idle_timeout: 90
header_timeout: 1.5s
drain_timeout: 250ms
max_header_bytes: 65536
)"),
                   "edge.yaml", cfg);

  EXPECT_EQ(cfg.id(), "edge-1");
  EXPECT_EQ(cfg.admin().listen(), "127.0.0.1:9901");
  EXPECT_EQ(cfg.log().level(), "debug");
  ASSERT_EQ(cfg.listeners_size(), 2);
  EXPECT_EQ(cfg.listeners(0).listen(), "0.0.0.0:8080");
  EXPECT_FALSE(cfg.listeners(0).has_tls());
  EXPECT_TRUE(cfg.listeners(1).has_tls());
  EXPECT_EQ(cfg.listeners(1).tls().cert_file(), "/etc/postern/edge.crt");
  EXPECT_EQ(cfg.listeners(1).tls().key_file(), "/etc/postern/edge.key");
  EXPECT_EQ(cfg.public_url(), "https://api.example.com");
  EXPECT_EQ(cfg.broker().address(), "broker:7444");
  EXPECT_TRUE(cfg.broker().has_tls());
  EXPECT_EQ(cfg.broker().tls().ca_file(), "/etc/postern/ca.crt");
  EXPECT_EQ(cfg.broker().tls().server_name(), "broker.internal");
  ASSERT_EQ(cfg.apis_size(), 2);
  EXPECT_EQ(cfg.apis(0).name(), "orders");
  EXPECT_EQ(cfg.apis(0).version(), "v1");
  EXPECT_EQ(cfg.apis(0).routing(), "apigateway://orders/api");
  EXPECT_EQ(cfg.apis(0).timeout().seconds(), 30);
  EXPECT_EQ(cfg.apis(1).version(), "2");
  EXPECT_EQ(cfg.apis(1).base_path(), "/wx");
  EXPECT_EQ(cfg.apis(1).ca_file(), "/etc/ssl/wx.pem");
  EXPECT_FALSE(cfg.apis(1).has_timeout());
  EXPECT_EQ(cfg.default_alias(), "fallback");
  EXPECT_EQ(cfg.upstream_timeout().seconds(), 60);
  EXPECT_EQ(cfg.idle_timeout().seconds(), 90);
  EXPECT_EQ(cfg.header_timeout().seconds(), 1);
  EXPECT_EQ(cfg.header_timeout().nanos(), 500'000'000);
  EXPECT_EQ(cfg.drain_timeout().seconds(), 0);
  EXPECT_EQ(cfg.drain_timeout().nanos(), 250'000'000);
  EXPECT_EQ(cfg.max_header_bytes(), 65536u);
}

TEST(YamlProto, LoadsFullConnectorConfigWithAliasesMap) {
  v1::ConnectorConfig cfg;
  load_yaml_string(yaml(R"(
id: connector-1
admin: {listen: "127.0.0.1:0"}
brokers:
  - broker-0.broker:7443
  - broker-1.broker:7443
tls:
  ca_file: ca.crt
  cert_file: c.crt
  key_file: c.key
aliases:
  orders:
    url: http://orders.internal:8080
    connect_timeout: 2s
    read_timeout: 2m
    max_idle_connections: 16
  billing:
    url: https://billing.internal/api
    ca_file: /etc/ssl/billing.pem
lanes: 4
max_concurrency: 512
reconnect_max: 1h
connect_timeout: 1500ms
drain_timeout: 20s
resolve_interval: 30s
)"),
                   "connector.yaml", cfg);

  EXPECT_EQ(cfg.id(), "connector-1");
  EXPECT_EQ(cfg.admin().listen(), "127.0.0.1:0");
  EXPECT_THAT(cfg.brokers(), ElementsAre("broker-0.broker:7443", "broker-1.broker:7443"));
  EXPECT_EQ(cfg.tls().ca_file(), "ca.crt");
  EXPECT_EQ(cfg.tls().cert_file(), "c.crt");
  EXPECT_EQ(cfg.tls().key_file(), "c.key");
  ASSERT_EQ(cfg.aliases_size(), 2);
  ASSERT_TRUE(cfg.aliases().contains("orders"));
  const auto& orders = cfg.aliases().at("orders");
  EXPECT_EQ(orders.url(), "http://orders.internal:8080");
  EXPECT_EQ(orders.connect_timeout().seconds(), 2);
  EXPECT_EQ(orders.read_timeout().seconds(), 120);
  EXPECT_EQ(orders.max_idle_connections(), 16u);
  ASSERT_TRUE(cfg.aliases().contains("billing"));
  EXPECT_EQ(cfg.aliases().at("billing").url(), "https://billing.internal/api");
  EXPECT_EQ(cfg.aliases().at("billing").ca_file(), "/etc/ssl/billing.pem");
  EXPECT_FALSE(cfg.aliases().at("billing").has_connect_timeout());
  EXPECT_EQ(cfg.lanes(), 4u);
  EXPECT_EQ(cfg.max_concurrency(), 512u);
  EXPECT_EQ(cfg.reconnect_max().seconds(), 3600);
  EXPECT_EQ(cfg.connect_timeout().seconds(), 1);
  EXPECT_EQ(cfg.connect_timeout().nanos(), 500000000);
  EXPECT_EQ(cfg.drain_timeout().seconds(), 20);
  EXPECT_EQ(cfg.resolve_interval().seconds(), 30);
}

TEST(YamlProto, LoadsBrokerConfigWithRepeatedMessagesAndFlowStyle) {
  v1::BrokerConfig cfg;
  load_yaml_string(yaml(R"(
id: broker-1
registration:
  listen: 0.0.0.0:7443
  tls: {cert_file: b.crt, key_file: b.key, client_ca_file: ca.crt}
relay:
  listen: 0.0.0.0:7444
identities:
  - identity: spiffe://corp/connector/a
    aliases: [orders, billing]
  - identity: connector-b.corp
    aliases: ["*"]
heartbeat_interval: 5s
heartbeat_timeout: 15s
park_wait: 5s
drain_timeout: 20s
response_window: 1048576
)"),
                   "broker.yaml", cfg);

  EXPECT_EQ(cfg.registration().tls().client_ca_file(), "ca.crt");
  EXPECT_FALSE(cfg.relay().has_tls());
  ASSERT_EQ(cfg.identities_size(), 2);
  EXPECT_EQ(cfg.identities(0).identity(), "spiffe://corp/connector/a");
  EXPECT_THAT(cfg.identities(0).aliases(), ElementsAre("orders", "billing"));
  EXPECT_THAT(cfg.identities(1).aliases(), ElementsAre("*"));
  EXPECT_EQ(cfg.heartbeat_timeout().seconds(), 15);
  EXPECT_EQ(cfg.drain_timeout().seconds(), 20);
  EXPECT_EQ(cfg.response_window(), 1048576u);
}

TEST(YamlProto, EmptyDocumentGivesDefaultMessage) {
  for (const char* text : {"", "# nothing but a comment\n", "---\n", "{}\n", "~\n"}) {
    v1::EdgeConfig cfg;
    EXPECT_NO_THROW(load_yaml_string(text, "edge.yaml", cfg)) << text;
    EXPECT_EQ(cfg.ByteSizeLong(), 0u) << text;
  }
}

TEST(YamlProto, ClearsOutputFirst) {
  v1::EdgeConfig cfg;
  cfg.set_public_url("https://old.example.com");
  cfg.add_apis()->set_name("stale");
  load_yaml_string("id: edge-2\n", "edge.yaml", cfg);
  EXPECT_EQ(cfg.id(), "edge-2");
  EXPECT_EQ(cfg.public_url(), "");
  EXPECT_EQ(cfg.apis_size(), 0);
}

TEST(YamlProto, NullValuesLeaveDefaults) {
  v1::EdgeConfig cfg;
  load_yaml_string(yaml(R"(
id:
admin: ~
listeners:
max_header_bytes: null
public_url: "null"
broker:
  tls:
)"),
                   "edge.yaml", cfg);
  EXPECT_EQ(cfg.id(), "");
  EXPECT_FALSE(cfg.has_admin());
  EXPECT_EQ(cfg.listeners_size(), 0);
  EXPECT_EQ(cfg.max_header_bytes(), 0u);
  EXPECT_EQ(cfg.public_url(), "null");  // quoted: a string, not null
  EXPECT_TRUE(cfg.has_broker());
  EXPECT_FALSE(cfg.broker().has_tls());
}

TEST(YamlProto, EmptyMapMarksMessagePresent) {
  v1::EdgeConfig cfg;
  load_yaml_string("listeners:\n  - listen: 0.0.0.0:443\n    tls: {}\n", "edge.yaml", cfg);
  ASSERT_EQ(cfg.listeners_size(), 1);
  EXPECT_TRUE(cfg.listeners(0).has_tls());
}

// ---------------------------------------------------------------- errors with positions

TEST(YamlProto, UnknownTopLevelFieldNamesPositionAndKnownFields) {
  EXPECT_THAT(errors_of<v1::EdgeConfig>(yaml(R"(
id: edge-1
listner: 0.0.0.0:8080
)")),
              ElementsAre("edge.yaml:2:1: listner: unknown field 'listner' (known: id, admin, log, listeners, "
                          "public_url, broker, apis, default_alias, upstream_timeout, idle_timeout, header_timeout, "
                          "drain_timeout, max_header_bytes, invocation_log_file, max_ws_message_bytes, trusted_config_keys, trusted_proxies, file_check_interval, tracing)"));
}

TEST(YamlProto, UnknownNestedFieldHasPathAndKeyPosition) {
  EXPECT_THAT(errors_of<v1::EdgeConfig>(yaml(R"(
id: edge-1
apis:
  - name: orders
    version: v1
    routng: apigateway://orders/api
)")),
              ElementsAre("edge.yaml:5:5: apis[0].routng: unknown field 'routng' "
                          "(known: name, version, base_path, routing, ca_file, timeout)"));
}

TEST(YamlProto, ErrorInSecondListElementHasIndexedPath) {
  EXPECT_THAT(errors_of<v1::EdgeConfig>(yaml(R"(
apis:
  - name: a
    timeout: 5s
  - name: b
    timeout: abc
)")),
              ElementsAre("edge.yaml:5:14: apis[1].timeout: expected a duration like 250ms, 30s or 5m, got 'abc'"));
}

TEST(YamlProto, ErrorInMapValueHasKeyedPath) {
  EXPECT_THAT(errors_of<v1::ConnectorConfig>(yaml(R"(
aliases:
  orders:
    url: http://orders:8080
    connect_timeout: soon
  billing:
    uri: http://billing:8080
)"),
                                             "connector.yaml"),
              ElementsAre("connector.yaml:4:22: aliases[orders].connect_timeout: expected a duration like 250ms, "
                          "30s or 5m, got 'soon'",
                          "connector.yaml:6:5: aliases[billing].uri: unknown field 'uri' "
                          "(known: url, ca_file, connect_timeout, read_timeout, max_idle_connections)"));
}

TEST(YamlProto, NegativeValueForUnsignedField) {
  EXPECT_THAT(errors_of<v1::EdgeConfig>("max_header_bytes: -1\n"),
              ElementsAre("edge.yaml:1:19: max_header_bytes: expected an unsigned integer, got '-1'"));
}

TEST(YamlProto, UnsignedOverflowAndNonIntegers) {
  EXPECT_THAT(errors_of<v1::EdgeConfig>("max_header_bytes: 4294967296\n"),
              ElementsAre("edge.yaml:1:19: max_header_bytes: expected an unsigned integer in 0..4294967295, got "
                          "'4294967296'"));
  EXPECT_THAT(errors_of<v1::EdgeConfig>("max_header_bytes: 64k\n"),
              ElementsAre("edge.yaml:1:19: max_header_bytes: expected an unsigned integer, got '64k'"));
  EXPECT_THAT(errors_of<v1::EdgeConfig>("max_header_bytes: 1.5\n"), SizeIs(1));

  v1::EdgeConfig cfg;
  load_yaml_string("max_header_bytes: 4294967295\n", "edge.yaml", cfg);
  EXPECT_EQ(cfg.max_header_bytes(), 4294967295u);
}

TEST(YamlProto, ScalarWhereSequenceExpected) {
  EXPECT_THAT(errors_of<v1::ConnectorConfig>("brokers: broker:7443\n", "connector.yaml"),
              ElementsAre("connector.yaml:1:10: brokers: expected a sequence, got 'broker:7443'"));
  EXPECT_THAT(errors_of<v1::EdgeConfig>("apis: {name: orders}\n"),
              ElementsAre("edge.yaml:1:7: apis: expected a sequence, got a map"));
}

TEST(YamlProto, TypeMismatchesNameExpectedAndFound) {
  EXPECT_THAT(errors_of<v1::EdgeConfig>("id: {a: b}\n"),
              ElementsAre("edge.yaml:1:5: id: expected a string, got a map"));
  EXPECT_THAT(errors_of<v1::EdgeConfig>("broker: broker:7444\n"),
              ElementsAre("edge.yaml:1:9: broker: expected a map, got 'broker:7444'"));
  EXPECT_THAT(errors_of<v1::EdgeConfig>("admin: [127.0.0.1:9901]\n"),
              ElementsAre("edge.yaml:1:8: admin: expected a map, got a sequence"));
  EXPECT_THAT(errors_of<v1::EdgeConfig>("upstream_timeout: {seconds: 5}\n"),
              ElementsAre("edge.yaml:1:19: upstream_timeout: expected a duration like 250ms, 30s or 5m, got a map"));
  EXPECT_THAT(errors_of<v1::ConnectorConfig>("aliases: [orders]\n", "c.yaml"),
              ElementsAre("c.yaml:1:10: aliases: expected a map, got a sequence"));
  EXPECT_THAT(errors_of<v1::ConnectorConfig>("aliases: {orders: ~}\n", "c.yaml"),
              ElementsAre(MatchesRegex("c\\.yaml:1:[0-9]+: aliases\\[orders\\]: expected a map, got null")));
  EXPECT_THAT(errors_of<v1::ConnectorConfig>("brokers: [a, [b]]\n", "c.yaml"),
              ElementsAre("c.yaml:1:14: brokers[1]: expected a string, got a sequence"));
}

TEST(YamlProto, TopLevelMustBeAMap) {
  EXPECT_THAT(errors_of<v1::EdgeConfig>("just a string\n"),
              ElementsAre("edge.yaml:1:1: expected a map of field names at the top level, got 'just a string'"));
  EXPECT_THAT(errors_of<v1::EdgeConfig>("- id: a\n"),
              ElementsAre("edge.yaml:1:1: expected a map of field names at the top level, got a sequence"));
}

TEST(YamlProto, MoreThanOneDocumentIsAnError) {
  EXPECT_THAT(errors_of<v1::EdgeConfig>("id: a\n---\nid: b\n"),
              ElementsAre("edge.yaml:2:1: expected one YAML document, found more than one"));
}

TEST(YamlProto, DuplicateFieldIsAnError) {
  v1::EdgeConfig cfg;
  const auto errors = errors_of("id: a\nid: b\n", "edge.yaml", cfg);
  EXPECT_THAT(errors, ElementsAre("edge.yaml:2:1: id: duplicate field 'id'"));
}

TEST(YamlProto, CollectsAllErrorsInDocumentOrder) {
  const std::string text = yaml(R"(
id: [a]
max_header_bytes: 1e3
broker:
  address: broker:7444
  tls: yes
bogus: 1
apis:
  - name: a
    timeout: 5 minutes
  - nme: b
idle_timeout: 5s
)");
  v1::EdgeConfig cfg;
  try {
    load_yaml_string(text, "edge.yaml", cfg);
    FAIL() << "expected a ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.errors(),
                ElementsAre("edge.yaml:1:5: id: expected a string, got a sequence",
                            "edge.yaml:2:19: max_header_bytes: expected an unsigned integer, got '1e3'",
                            "edge.yaml:5:8: broker.tls: expected a map, got 'yes'",
                            MatchesRegex("edge\\.yaml:6:1: bogus: unknown field 'bogus' \\(known: id, .*\\)"),
                            "edge.yaml:9:14: apis[0].timeout: expected a duration like 250ms, 30s or 5m, "
                            "got '5 minutes'",
                            MatchesRegex("edge\\.yaml:10:5: apis\\[1\\]\\.nme: unknown field 'nme' .*")));
    // what() carries every error, one per line.
    std::string joined;
    for (const auto& line : e.errors()) joined += (joined.empty() ? "" : "\n") + line;
    EXPECT_EQ(std::string(e.what()), joined);
  }
}

TEST(YamlProto, SyntaxErrorIsConfigErrorWithPosition) {
  const auto unclosed = errors_of<v1::EdgeConfig>("id: edge-1\napis: [a, b\n", "bad.yaml");
  ASSERT_THAT(unclosed, SizeIs(1));
  EXPECT_THAT(unclosed[0], MatchesRegex("bad\\.yaml:[0-9]+:[0-9]+: .+"));

  const auto bad_indent = errors_of<v1::EdgeConfig>("id: a\n  admin: b: c\n", "bad.yaml");
  ASSERT_THAT(bad_indent, SizeIs(1));
  EXPECT_THAT(bad_indent[0], MatchesRegex("bad\\.yaml:2:[0-9]+: .+"));
}

// Found by tests/fuzz (config): yaml-cpp 0.7's LoadAll never returned on
// these (endless documents); each is now a ConfigError naming the problem.
TEST(YamlProto, BrokenAliasesAreErrorsNotHangs) {
  for (const std::string& text : std::vector<std::string>{",*", ", 2*", ",*\n", ",\xdf\xa7" "1, 2*", "*"}) {
    const auto errors = errors_of<v1::EdgeConfig>(text);
    ASSERT_THAT(errors, SizeIs(1)) << text;
    EXPECT_THAT(errors[0], MatchesRegex("edge\\.yaml:[0-9]+:[0-9]+: .+")) << text;
  }
}

// ---------------------------------------------------------------- durations

TEST(YamlProto, DurationForms) {
  struct Case {
    const char* text;
    std::int64_t seconds;
    std::int32_t nanos;
  };
  for (const Case& c : {
           Case{"250ms", 0, 250'000'000},
           Case{"30s", 30, 0},
           Case{"5m", 300, 0},
           Case{"1h", 3600, 0},
           Case{"1.5s", 1, 500'000'000},
           Case{"90", 90, 0},
           Case{"\"90\"", 90, 0},
           Case{"1h30m", 5400, 0},
           Case{"1m0.5s", 60, 500'000'000},
           Case{"1.25ms", 0, 1'250'000},
           Case{"100us", 0, 100'000},
           Case{"10ns", 0, 10},
           Case{".5s", 0, 500'000'000},
           Case{"0.1m", 6, 0},
           Case{"0s", 0, 0},
       }) {
    v1::BrokerConfig cfg;
    ASSERT_NO_THROW(load_yaml_string(std::string("park_wait: ") + c.text + "\n", "b.yaml", cfg)) << c.text;
    EXPECT_EQ(cfg.park_wait().seconds(), c.seconds) << c.text;
    EXPECT_EQ(cfg.park_wait().nanos(), c.nanos) << c.text;
  }
}

TEST(YamlProto, BadDurations) {
  for (const char* text : {"abc", "-5s", "5x", "s", "1h30", "5 s", "1.5.5s", "''", "5S", "1d"}) {
    const auto errors = errors_of<v1::BrokerConfig>(std::string("park_wait: ") + text + "\n", "b.yaml");
    ASSERT_THAT(errors, SizeIs(1)) << text;
    EXPECT_THAT(errors[0], HasSubstr("park_wait: expected a duration like 250ms, 30s or 5m, got '")) << text;
  }
  EXPECT_THAT(errors_of<v1::BrokerConfig>("park_wait: abc\n", "b.yaml"),
              ElementsAre("b.yaml:1:12: park_wait: expected a duration like 250ms, 30s or 5m, got 'abc'"));
  EXPECT_THAT(errors_of<v1::BrokerConfig>("park_wait: 100000000000h\n", "b.yaml"),
              ElementsAre("b.yaml:1:12: park_wait: duration '100000000000h' is too large"));
  EXPECT_THAT(errors_of<v1::BrokerConfig>("park_wait: 2562047.9h\n", "b.yaml"),
              ElementsAre("b.yaml:1:12: park_wait: duration '2562047.9h' is too large"));
}

TEST(YamlProto, DurationOr) {
  pb::Duration d;
  EXPECT_EQ(duration_or(d, 5s), 5000ms);
  d.set_seconds(1);
  d.set_nanos(500'000'000);
  EXPECT_EQ(duration_or(d, 5s), 1500ms);
  d.set_seconds(0);
  d.set_nanos(2'500'000);
  EXPECT_EQ(duration_or(d, 5s), 2ms);
  d.set_seconds(315'576'000'000);  // the largest Duration: must not overflow
  d.set_nanos(0);
  EXPECT_EQ(duration_or(d, 5s), std::chrono::milliseconds(315'576'000'000'000));

  v1::EdgeConfig cfg;
  load_yaml_string("idle_timeout: 250ms\n", "edge.yaml", cfg);
  EXPECT_EQ(duration_or(cfg.idle_timeout(), 60s), 250ms);
  EXPECT_EQ(duration_or(cfg.header_timeout(), 10s), 10s);
}

TEST(YamlProto, FieldErrorFormat) {
  EXPECT_EQ(field_error("edge.yaml", "apis[1].routing", "must start with apigateway:// or http(s)://"),
            "edge.yaml: apis[1].routing: must start with apigateway:// or http(s)://");
  EXPECT_EQ(field_error("edge.yaml", "", "no listeners"), "edge.yaml: no listeners");
}

// ---------------------------------------------------------------- files

class YamlProtoFile : public ::testing::Test {
 protected:
  std::string write(const std::string& name, const std::string& text) {
    std::string path = ::testing::TempDir() + "yaml_proto_test_" + name;
    std::ofstream(path) << text;
    paths_.push_back(path);
    return path;
  }
  void TearDown() override {
    for (const auto& p : paths_) std::remove(p.c_str());
  }
  std::vector<std::string> paths_;
};

TEST_F(YamlProtoFile, LoadsFileAndNamesItInErrors) {
  const std::string good = write("good.yaml", "id: edge-1\nmax_header_bytes: 1024\n");
  v1::EdgeConfig cfg;
  load_yaml_file(good, cfg);
  EXPECT_EQ(cfg.id(), "edge-1");
  EXPECT_EQ(cfg.max_header_bytes(), 1024u);

  const std::string bad = write("bad.yaml", "id: edge-1\nmax_header_bytes: -5\n");
  try {
    load_yaml_file(bad, cfg);
    FAIL() << "expected a ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.errors(),
                ElementsAre(bad + ":2:19: max_header_bytes: expected an unsigned integer, got '-5'"));
  }
}

TEST_F(YamlProtoFile, MissingFileNamesPathAndErrno) {
  const std::string path = ::testing::TempDir() + "yaml_proto_test_no/such/edge.yaml";
  v1::EdgeConfig cfg;
  try {
    load_yaml_file(path, cfg);
    FAIL() << "expected a ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.errors(), ElementsAre(path + ": cannot read: No such file or directory"));
    EXPECT_EQ(std::string(e.what()), path + ": cannot read: No such file or directory");
  }
}

TEST_F(YamlProtoFile, DirectoryIsUnreadable) {
  v1::EdgeConfig cfg;
  try {
    load_yaml_file("/", cfg);
    FAIL() << "expected a ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.errors(), ElementsAre("/: cannot read: Is a directory"));
  }
}

// ---------------------------------------------------------------- every scalar kind, on a schema built here

/// A schema with the field kinds the service configs do not (yet) use.
class YamlProtoScalars : public ::testing::Test {
 protected:
  void SetUp() override {
    pb::FileDescriptorProto file;
    ASSERT_TRUE(pb::TextFormat::ParseFromString(R"pb(
      name: "postern/test/scalars.proto"
      package: "postern.test"
      syntax: "proto3"
      dependency: "google/protobuf/duration.proto"
      enum_type {
        name: "LogLevel"
        value { name: "LOG_LEVEL_UNSPECIFIED" number: 0 }
        value { name: "LOG_LEVEL_DEBUG" number: 1 }
        value { name: "LOG_LEVEL_INFO" number: 2 }
      }
      message_type {
        name: "Scalars"
        field { name: "s" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING }
        field { name: "b" number: 2 label: LABEL_OPTIONAL type: TYPE_BOOL }
        field { name: "i32" number: 3 label: LABEL_OPTIONAL type: TYPE_INT32 }
        field { name: "i64" number: 4 label: LABEL_OPTIONAL type: TYPE_INT64 }
        field { name: "u64" number: 5 label: LABEL_OPTIONAL type: TYPE_UINT64 }
        field { name: "d" number: 6 label: LABEL_OPTIONAL type: TYPE_DOUBLE }
        field { name: "f" number: 7 label: LABEL_OPTIONAL type: TYPE_FLOAT }
        field { name: "level" number: 8 label: LABEL_OPTIONAL type: TYPE_ENUM type_name: ".postern.test.LogLevel" }
        field { name: "levels" number: 9 label: LABEL_REPEATED type: TYPE_ENUM type_name: ".postern.test.LogLevel" }
        field { name: "ports" number: 10 label: LABEL_REPEATED type: TYPE_UINT32 }
        field {
          name: "timeouts"
          number: 11
          label: LABEL_REPEATED
          type: TYPE_MESSAGE
          type_name: ".google.protobuf.Duration"
        }
        field {
          name: "weights"
          number: 12
          label: LABEL_REPEATED
          type: TYPE_MESSAGE
          type_name: ".postern.test.Scalars.WeightsEntry"
        }
        field { name: "host" number: 13 label: LABEL_OPTIONAL type: TYPE_STRING oneof_index: 0 }
        field { name: "socket" number: 14 label: LABEL_OPTIONAL type: TYPE_STRING oneof_index: 0 }
        oneof_decl { name: "target" }
        nested_type {
          name: "WeightsEntry"
          field { name: "key" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING }
          field { name: "value" number: 2 label: LABEL_OPTIONAL type: TYPE_INT32 }
          options { map_entry: true }
        }
      }
    )pb",
                                                &file));
    ASSERT_NE(pool_.BuildFile(file), nullptr);
    desc_ = pool_.FindMessageTypeByName("postern.test.Scalars");
    ASSERT_NE(desc_, nullptr);
    factory_.SetDelegateToGeneratedFactory(true);
  }

  std::unique_ptr<pb::Message> load(const std::string& text) {
    std::unique_ptr<pb::Message> msg(factory_.GetPrototype(desc_)->New());
    load_yaml_string(text, "s.yaml", *msg);
    return msg;
  }

  std::vector<std::string> errors(const std::string& text) {
    std::unique_ptr<pb::Message> msg(factory_.GetPrototype(desc_)->New());
    return errors_of(text, "s.yaml", *msg);
  }

  const pb::FieldDescriptor* field(const char* name) { return desc_->FindFieldByName(name); }

  pb::DescriptorPool pool_{pb::DescriptorPool::generated_pool()};
  pb::DynamicMessageFactory factory_{&pool_};
  const pb::Descriptor* desc_ = nullptr;
};

TEST_F(YamlProtoScalars, BooleansPerYaml) {
  for (const auto& [text, want] : std::vector<std::pair<std::string, bool>>{
           {"true", true}, {"false", false}, {"yes", true}, {"no", false}, {"Yes", true}, {"NO", false}}) {
    auto msg = load("b: " + text + "\n");
    EXPECT_EQ(msg->GetReflection()->GetBool(*msg, field("b")), want) << text;
  }
  EXPECT_THAT(errors("b: maybe\n"), ElementsAre("s.yaml:1:4: b: expected a boolean (true or false), got 'maybe'"));
}

TEST_F(YamlProtoScalars, SignedIntegersWithRangeChecks) {
  auto msg = load("i32: -2147483648\ni64: 9223372036854775807\nu64: 18446744073709551615\n");
  const auto* refl = msg->GetReflection();
  EXPECT_EQ(refl->GetInt32(*msg, field("i32")), -2147483647 - 1);
  EXPECT_EQ(refl->GetInt64(*msg, field("i64")), 9223372036854775807);
  EXPECT_EQ(refl->GetUInt64(*msg, field("u64")), 18446744073709551615u);
  msg = load("i32: +7\n");
  EXPECT_EQ(msg->GetReflection()->GetInt32(*msg, field("i32")), 7);

  EXPECT_THAT(errors("i32: 2147483648\n"),
              ElementsAre("s.yaml:1:6: i32: expected an integer in -2147483648..2147483647, got '2147483648'"));
  EXPECT_THAT(errors("i64: 12abc\n"), ElementsAre("s.yaml:1:6: i64: expected an integer, got '12abc'"));
  EXPECT_THAT(errors("i32: +-1\n"), ElementsAre("s.yaml:1:6: i32: expected an integer, got '+-1'"));
  EXPECT_THAT(errors("u64: -0\n"), ElementsAre("s.yaml:1:6: u64: expected an unsigned integer, got '-0'"));
}

TEST_F(YamlProtoScalars, FloatingPoint) {
  auto msg = load("d: -2.5e3\nf: 1.5\n");
  const auto* refl = msg->GetReflection();
  EXPECT_DOUBLE_EQ(refl->GetDouble(*msg, field("d")), -2500.0);
  EXPECT_FLOAT_EQ(refl->GetFloat(*msg, field("f")), 1.5f);
  msg = load("d: .inf\nf: -.Inf\n");
  EXPECT_TRUE(std::isinf(msg->GetReflection()->GetDouble(*msg, field("d"))));
  EXPECT_LT(msg->GetReflection()->GetFloat(*msg, field("f")), 0);
  msg = load("d: .nan\n");
  EXPECT_TRUE(std::isnan(msg->GetReflection()->GetDouble(*msg, field("d"))));
  msg = load("d: 7\n");
  EXPECT_DOUBLE_EQ(msg->GetReflection()->GetDouble(*msg, field("d")), 7.0);

  EXPECT_THAT(errors("d: fast\n"), ElementsAre("s.yaml:1:4: d: expected a number, got 'fast'"));
  EXPECT_THAT(errors("d: 1e999\n"),
              ElementsAre("s.yaml:1:4: d: expected a number within the range of a double, got '1e999'"));
  EXPECT_THAT(errors("f: 1e39\n"),
              ElementsAre("s.yaml:1:4: f: expected a number within the range of a float, got '1e39'"));
}

TEST_F(YamlProtoScalars, EnumsByNameCaseOrWithoutPrefix) {
  for (const char* text : {"LOG_LEVEL_DEBUG", "log_level_debug", "debug", "Debug"}) {
    auto msg = load(std::string("level: ") + text + "\n");
    EXPECT_EQ(msg->GetReflection()->GetEnumValue(*msg, field("level")), 1) << text;
  }
  auto msg = load("levels: [info, LOG_LEVEL_DEBUG]\n");
  const auto* refl = msg->GetReflection();
  ASSERT_EQ(refl->FieldSize(*msg, field("levels")), 2);
  EXPECT_EQ(refl->GetRepeatedEnumValue(*msg, field("levels"), 0), 2);
  EXPECT_EQ(refl->GetRepeatedEnumValue(*msg, field("levels"), 1), 1);

  EXPECT_THAT(errors("levels: [info, loud]\n"),
              ElementsAre("s.yaml:1:16: levels[1]: unknown value 'loud' for enum LogLevel (known: DEBUG, INFO)"));
  EXPECT_THAT(errors("level: {x: 1}\n"),
              ElementsAre("s.yaml:1:8: level: expected a value of enum LogLevel, got a map"));
}

TEST_F(YamlProtoScalars, RepeatedScalarsDurationsAndIntMap) {
  auto msg = load("ports: [80, 443]\ntimeouts: [1s, 250ms]\nweights: {a: 1, b: -2}\n");
  const auto* refl = msg->GetReflection();
  ASSERT_EQ(refl->FieldSize(*msg, field("ports")), 2);
  EXPECT_EQ(refl->GetRepeatedUInt32(*msg, field("ports"), 1), 443u);
  ASSERT_EQ(refl->FieldSize(*msg, field("timeouts")), 2);
  const auto& t1 = static_cast<const pb::Duration&>(refl->GetRepeatedMessage(*msg, field("timeouts"), 1));
  EXPECT_EQ(t1.nanos(), 250'000'000);
  EXPECT_EQ(refl->FieldSize(*msg, field("weights")), 2);

  EXPECT_THAT(errors("ports: [80, -1, ~]\nweights: {a: 1, b: x}\n"),
              ElementsAre("s.yaml:1:13: ports[1]: expected an unsigned integer, got '-1'",
                          "s.yaml:1:17: ports[2]: expected an unsigned integer, got null",
                          "s.yaml:2:20: weights[b]: expected an integer, got 'x'"));
}

TEST_F(YamlProtoScalars, OneofAcceptsOneMember) {
  auto msg = load("socket: /run/x.sock\n");
  EXPECT_EQ(msg->GetReflection()->GetString(*msg, field("socket")), "/run/x.sock");
  EXPECT_THAT(errors("host: a\nsocket: /run/x.sock\n"),
              ElementsAre("s.yaml:2:1: socket: field 'socket' conflicts with 'host' (only one of oneof 'target' may "
                          "be set)"));
}

// Listings print the config as users write it: short enum names, no {} for
// an unset block.
TEST(ConfigJson, ShortEnumNamesAndNoEmptyBlocks) {
  postern::policy::v1::Api api;
  load_yaml_string("name: orders\nenforcement: GREEN\npolicies: {identify: {identifiers: [API_KEY, jwt]}}\n",
                   "api.yaml", api);
  api.mutable_policies()->mutable_identify()->mutable_jwt();  // present, empty
  const std::string json = to_json(api);
  EXPECT_NE(json.find(R"("enforcement":"GREEN")"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("identifiers":["API_KEY","JWT"])"), std::string::npos) << json;
  EXPECT_EQ(json.find("jwt"), std::string::npos) << json;
  EXPECT_EQ(json.find("{}"), std::string::npos) << json;
  EXPECT_EQ(enum_short_name(postern::policy::v1::Enforcement_descriptor()->FindValueByName("ENFORCEMENT_GREEN")),
            "GREEN");
}

}  // namespace
}  // namespace postern::config
