#include "common/policy/enforcement.hpp"

#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <boost/asio/io_context.hpp>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/config/yaml_proto.hpp"
#include "common/policy/codec.hpp"
#include "support/files.hpp"

namespace postern::policy {
namespace {

namespace tv1 = tunnel::v1;

constexpr const char* kKey = "key-echo-5b1d";

std::shared_ptr<const Catalog> catalog() {
  pv1::Snapshot s;
  s.set_version(1);
  config::load_yaml_string(R"(
apis:
  - name: keyed
    base_path: /keyed
    routing: "apigateway://A/keyed"
    policies:
      identify: {identifiers: [API_KEY]}
      transform: {request_headers: {add: {X-Via: postern}}}
      log_invocation: {}
  - name: conc
    base_path: /conc
    routing: "apigateway://A/conc"
    policies: {throttling: {concurrency: [{max: 1}]}}
  - name: ws
    type: websocket
    base_path: /ws
    routing: "apigateway://A/ws"
    policies: {websocket: {allowed_origins: ["https://ok.example"]}}
applications:
  - {name: echo, api_keys: [{sha256: )" + sha256_hex(kKey) + R"(}], apis: [keyed]}
)",
                           "policy.yaml", *s.mutable_config());
  std::vector<Issue> issues;
  auto c = Catalog::compile(s, issues);
  if (!c) throw std::runtime_error(issues.front().message);
  return c;
}

tv1::RequestHead request(const std::string& target, std::vector<std::pair<std::string, std::string>> headers = {}) {
  tv1::RequestHead h;
  h.set_method("GET");
  h.set_target(target);
  h.set_client_ip("10.0.0.1");
  for (auto& [n, v] : headers) {
    auto* f = h.add_headers();
    f->set_name(n);
    f->set_value(v);
  }
  return h;
}

// Runs admit() to its end.
Verdict admit(Enforcement& e, ExchangePolicies& x, tv1::RequestHead& head, const Admission& a) {
  asio::io_context io;
  std::optional<Verdict> v;
  asio::co_spawn(
      io, [&]() -> asio::awaitable<void> { v = co_await e.admit(x, head, a); }, asio::detached);
  io.run();
  return *v;
}

struct Fixture : ::testing::Test {
  testing::TempDir dir{"enforcement"};
  prometheus::Registry registry;
  std::shared_ptr<const Catalog> cat = catalog();

  ExchangePolicies policies_of(const std::string& api) {
    ExchangePolicies x;
    x.catalog = cat;
    x.api = cat->api(api);
    return x;
  }
};

using EnforcementTest = Fixture;

TEST_F(EnforcementTest, IdentifiesThenTransformsTheHeadOnlyWhenAdmitted) {
  Enforcement e("edge", registry, "");
  auto refused = policies_of("keyed");
  auto head = request("/keyed/a");
  const Admission a{"", "10.0.0.1"};
  const Verdict no = admit(e, refused, head, a);
  EXPECT_EQ(no.status, 401u);
  EXPECT_EQ(find_header(head.headers(), "x-via"), nullptr);
  ASSERT_FALSE(refused.decisions.empty());
  EXPECT_EQ(refused.decisions.back().outcome, "rejected");

  auto admitted = policies_of("keyed");
  head = request("/keyed/a", {{"x-Gateway-APIKey", kKey}});
  EXPECT_TRUE(admit(e, admitted, head, a).allowed());
  EXPECT_EQ(admitted.identity.application, "echo");
  EXPECT_EQ(header_value(head.headers(), "x-via"), "postern");
  EXPECT_EQ(find_header(head.headers(), "x-gateway-apikey"), nullptr);
}

TEST_F(EnforcementTest, AnUpgradesOriginComesFromTheCallerOrElseFromTheHead) {
  Enforcement e("connector", registry, "");
  auto from_head = policies_of("ws");
  auto head = request("/ws", {{"Origin", "https://evil.example"}});
  EXPECT_EQ(admit(e, from_head, head, Admission{"", "10.0.0.1", true}).status, 403u);

  auto given = policies_of("ws");
  head = request("/ws", {{"Origin", "https://evil.example"}});
  EXPECT_TRUE(admit(e, given, head, Admission{"", "10.0.0.1", true, "https://ok.example"}).allowed());

  auto not_upgrade = policies_of("ws");
  head = request("/ws", {{"Origin", "https://evil.example"}});
  EXPECT_TRUE(admit(e, not_upgrade, head, Admission{"", "10.0.0.1"}).allowed());
}

TEST_F(EnforcementTest, TheHoldKeepsAConcurrencySlotUntilItGoes) {
  Enforcement e("edge", registry, "");
  auto first = policies_of("conc");
  auto head = request("/conc");
  const Admission a{"", "10.0.0.1"};
  EXPECT_TRUE(admit(e, first, head, a).allowed());
  auto second = policies_of("conc");
  EXPECT_EQ(admit(e, second, head, a).reason, "concurrency_limit");
  first.hold.reset();
  auto third = policies_of("conc");
  EXPECT_TRUE(admit(e, third, head, a).allowed());
}

TEST_F(EnforcementTest, RecordsNameThePointAndUpstreamTimeOnlyWhereMeasured) {
  const std::string log = dir.file("invocations.log");
  {
    Enforcement e("edge", registry, log);
    struct NoBody final : BodySource {
      asio::awaitable<bool> next(std::string_view&) override { co_return false; }
    } body;
    struct NoSink final : ResponseSink {
      asio::awaitable<void> head(tv1::ResponseHead&) override { co_return; }
      asio::awaitable<void> body(std::string_view) override { co_return; }
      asio::awaitable<void> end(const Trailers&) override { co_return; }
    } sink;
    auto x = policies_of("keyed");
    Policed p(x, body, sink, kNoThreatRules, false);
    const auto t0 = std::chrono::steady_clock::now();
    asio::io_context io;
    tv1::ResponseHead answer;
    answer.set_status(200);
    asio::co_spawn(io, p.sink.head(answer), asio::detached);
    io.run();
    e.record(x, p, std::nullopt, ExchangeFacts{"r1", "keyed", "10.0.0.1", "GET", "/keyed/a;k=v?q=1", t0, t0});
    e.record(x, p, std::nullopt, ExchangeFacts{"r2", "keyed", "10.0.0.1", "GET", "/keyed/b", t0, std::nullopt});
    auto none = policies_of("conc");  // no log_invocation
    e.record(none, p, std::nullopt, ExchangeFacts{"r3", "conc", "10.0.0.1", "GET", "/conc", t0, std::nullopt});
  }
  const std::string text = testing::read_file(log);
  const auto nl = text.find('\n');
  ASSERT_NE(nl, std::string::npos) << text;
  const std::string r1 = text.substr(0, nl), r2 = text.substr(nl + 1);
  EXPECT_NE(r1.find(R"("request_id":"r1")"), std::string::npos) << r1;
  EXPECT_NE(r1.find(R"("enforced_by":"edge")"), std::string::npos) << r1;
  EXPECT_NE(r1.find(R"("path":"/keyed/a;k=REDACTED")"), std::string::npos) << r1;
  EXPECT_NE(r1.find("upstream_ms"), std::string::npos) << r1;
  EXPECT_NE(r2.find(R"("request_id":"r2")"), std::string::npos) << r2;
  EXPECT_EQ(r2.find("upstream_ms"), std::string::npos) << r2;
  EXPECT_EQ(text.find(R"("request_id":"r3")"), std::string::npos) << text;
}

}  // namespace
}  // namespace postern::policy
