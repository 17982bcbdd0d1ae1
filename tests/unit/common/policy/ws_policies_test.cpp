#include "common/policy/ws_policies.hpp"

#include <gtest/gtest.h>
#include <prometheus/counter.h>

#include "common/config/yaml_proto.hpp"

namespace postern::policy {
namespace {

pv1::MessageEdit edit(const std::string& yaml) {
  pv1::MessageEdit e;
  config::load_yaml_string(yaml, "edit.yaml", e);
  return e;
}

net::WsMessage msg(std::string data, bool binary = false) {
  net::WsMessage m;
  m.kind = binary ? net::WsMessage::Kind::binary : net::WsMessage::Kind::text;
  m.data = std::move(data);
  return m;
}

TEST(MessageEdits, JsonFieldsSetAndRemovedInOrder) {
  auto m = msg(R"({"b":1,"secret":"x","a":[1,2]})");
  apply_edit(edit(R"({json_set: {via: '"postern"', n: "42", obj: '{"k":true}'}, json_remove: [secret]})"), m);
  EXPECT_EQ(m.data, R"({"b":1,"a":[1,2],"n":42,"obj":{"k":true},"via":"postern"})");
}

TEST(MessageEdits, NonObjectsAndBinaryKeepTheirBytesButGetPrependAndAppend) {
  auto t = msg("not json");
  apply_edit(edit(R"({json_set: {a: "1"}, prepend: "<", append: ">"})"), t);
  EXPECT_EQ(t.data, "<not json>");
  auto b = msg(std::string("\x00\x01", 2), true);
  apply_edit(edit(R"({json_remove: [x], append: "!"})"), b);
  EXPECT_EQ(b.data, std::string("\x00\x01!", 3));
  EXPECT_TRUE(b.binary());
}

TEST(MessageEdits, ValidJson) {
  EXPECT_TRUE(valid_json("42"));
  EXPECT_TRUE(valid_json("\"s\""));
  EXPECT_FALSE(valid_json("bare"));
  EXPECT_FALSE(valid_json("{"));
}

std::shared_ptr<const Catalog> compile(const std::string& yaml, std::vector<Issue>& issues) {
  pv1::Snapshot s;
  s.set_version(1);
  config::load_yaml_string(yaml, "policy.yaml", *s.mutable_config());
  return Catalog::compile(s, issues);
}

TEST(OriginCheck, ListedOriginsOnlyAndNoneMeansAny) {
  std::vector<Issue> issues;
  auto cat = compile(R"(apis:
  - {name: a, type: websocket, routing: "apigateway://x/a", policies: {websocket: {allowed_origins: ["https://ok.example"]}}}
  - {name: b, type: websocket, routing: "apigateway://x/b"}
)",
                     issues);
  ASSERT_TRUE(cat) << issues.front().message;
  Decisions d;
  EXPECT_TRUE(check_origin(*cat->api("a"), "https://ok.example", d).allowed());
  EXPECT_TRUE(check_origin(*cat->api("a"), "HTTPS://OK.EXAMPLE", d).allowed());
  auto bad = check_origin(*cat->api("a"), "https://evil.example", d);
  EXPECT_EQ(bad.status, 403u);
  EXPECT_NE(bad.detail.find("evil.example"), std::string::npos);
  EXPECT_EQ(check_origin(*cat->api("a"), "", d).reason, "missing_origin");
  EXPECT_TRUE(check_origin(*cat->api("b"), "https://anything", d).allowed());
}

TEST(WebSocketCatalog, RoutesTheContextWithOrWithoutItsSlashToTheNativePathAsWritten) {
  std::vector<Issue> issues;
  auto cat = compile(R"(apis:
  - {name: s, type: websocket, routing: "apigateway://x/api/demo/"}
  - {name: n, type: websocket, routing: "apigateway://x/api/plain"}
  - {name: d, type: websocket, routing: "ws://127.0.0.1:9/native/"}
)",
                     issues);
  ASSERT_TRUE(cat);
  EXPECT_EQ(cat->route("/gateway/s/1.0")->target, "/api/demo/");
  EXPECT_EQ(cat->route("/gateway/s/1.0/")->target, "/api/demo/");
  EXPECT_EQ(cat->route("/gateway/s/1.0?user=a")->target, "/api/demo/?user=a");
  EXPECT_EQ(cat->route("/gateway/s/1.0/room")->target, "/api/demo/room");
  EXPECT_EQ(cat->route("/gateway/n/1.0/")->target, "/api/plain");
  EXPECT_EQ(cat->route("/gateway/d/1.0")->target, "/");
  EXPECT_FALSE(cat->api("d")->reverse_invoke);
}

TEST(WebSocketCatalog, BadDefinitionsAreNamed) {
  std::vector<Issue> issues;
  auto cat = compile(R"(apis:
  - {name: r, routing: "ws://h:1/x"}
  - name: t
    type: websocket
    routing: apigateway://x/
    policies:
      message_transformation:
        client_to_server: [{json_set: {a: bare}}]
        service: {timeout: 1s}
  - {name: w, routing: "apigateway://x/w", policies: {websocket: {idle_timeout: 1s}}}
)",
                     issues);
  EXPECT_FALSE(cat);
  std::string all;
  for (const auto& i : issues) all += i.path + ": " + i.message + "\n";
  EXPECT_NE(all.find("apis[0].routing: 'ws://h:1/x': ws(s):// routing needs type: websocket"), std::string::npos) << all;
  EXPECT_NE(all.find("apis[1].policies.message_transformation.client_to_server[0].json_set[a]"), std::string::npos) << all;
  EXPECT_NE(all.find("apis[1].policies.message_transformation.service.address: required"), std::string::npos) << all;
  EXPECT_NE(all.find("apis[2].type: websocket and message_transformation policies need type: websocket"),
            std::string::npos)
      << all;
}

TEST(WebSocketPolicies, RelayOptionsDefaultToTenMinutesIdle) {
  prometheus::Counter up, down;
  EXPECT_EQ(WsSessionPolicies::relay_options(nullptr, up, down).idle_timeout, std::chrono::minutes(10));
  pv1::Policies p;
  config::load_yaml_string("{websocket: {idle_timeout: 2s, max_lifetime: 1h, ping_interval: 5s}}", "p.yaml", p);
  const auto o = WsSessionPolicies::relay_options(&p, up, down);
  EXPECT_EQ(o.idle_timeout, std::chrono::seconds(2));
  EXPECT_EQ(o.max_lifetime, std::chrono::hours(1));
  EXPECT_EQ(WsSessionPolicies::ping_interval(&p), std::chrono::seconds(5));
  // Message bytes passed on are counted by direction.
  o.on_sent(net::WsDirection::client_to_server, 10);
  o.on_sent(net::WsDirection::server_to_client, 300);
  o.on_sent(net::WsDirection::server_to_client, 5);
  EXPECT_EQ(up.Value(), 10);
  EXPECT_EQ(down.Value(), 305);
}

}  // namespace
}  // namespace postern::policy
