// The threat model, as attacks: each test does what an attacker would
// (against the real binaries on 127.0.0.1, with curl, raw sockets, or a gRPC
// client holding a real certificate) and asserts the refusal. Labelled
// `security`: `ctest -L security` runs them all. SECURITY.md says who may
// do what; these tests are its proof.
#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <chrono>
#include <filesystem>
#include <future>
#include <string>
#include <thread>

#include "common/crypto/keys.hpp"
#include "common/policy/signed_snapshot.hpp"
#include "postern/tunnel/v1/tunnel.grpc.pb.h"
#include "support/fake_connector.hpp"
#include "support/files.hpp"
#include "support/http.hpp"
#include "support/process.hpp"
#include "support/sockets.hpp"
#include "support/system.hpp"
#include "support/ws.hpp"

namespace postern::testing {
namespace {

namespace tv1 = tunnel::v1;
namespace pv1 = policy::v1;
using namespace std::chrono_literals;

double metric(std::uint16_t admin_port, const std::string& name, const std::map<std::string, std::string>& labels = {}) {
  return metric_value(scrape(admin_port), name, labels);
}

// The demo service logs every request target it receives (debug): what
// reached the native service.
bool native_saw(const System& sys, const std::string& text) {
  return sys.demo->log().find(text) != std::string::npos;
}

// ---------------------------------------------------------------- signed config

// A snapshot an attacker would like every edge to apply: a huge version (so
// later edits look stale) and the API `demo` rerouted to its own listener.
pv1::Snapshot hostile_snapshot(std::uint16_t attacker_port) {
  pv1::Snapshot s;
  s.set_version(std::uint64_t{1} << 60);
  s.set_source("attacker");
  auto* api = s.mutable_config()->add_apis();
  api->set_name("demo");
  api->set_version("1.0");
  api->set_routing("http://127.0.0.1:" + std::to_string(attacker_port) + "/");
  return s;
}

tv1::ConnectorMessage config_message(const pv1::SignedSnapshot& wire) {
  tv1::ConnectorMessage m;
  *m.mutable_config() = wire;
  return m;
}

// Finding 1: a connector relayed a config of its own and every edge applied
// it, sending clients' credentials to the attacker.
TEST(Security, ForgedConfigFromAConnectorIsRefusedEverywhere) {
  System sys;
  sys.start_all();
  auto attacker = Process::start({binary_path("postern-demo"), "--listen", "127.0.0.1:0", "--log-level", "debug"},
                                 sys.dir().file("attacker.log"));
  const auto attacker_port = attacker->wait_for_port("http");
  const auto version_before = metric(sys.edge_admin_port, "postern_edge_config_version");
  ASSERT_GT(version_before, 0);

  const auto hostile = hostile_snapshot(attacker_port);
  pv1::SignedSnapshot unsigned_wire;
  hostile.SerializeToString(unsigned_wire.mutable_snapshot());
  const auto rogue = crypto::SigningKey::from_file(sys.certs().rogue_signing_key);
  const auto real = crypto::SigningKey::from_file(sys.certs().signing_key);
  auto rogue_wire = policy::sign_snapshot(hostile, rogue);
  auto claimed = rogue_wire;
  claimed.set_key_id(real.key_id());  // names the trusted key, signed by another

  {
    // An identity granted its alias only (no publish_config): refused
    // whatever it sends, even a snapshot the policy service really signed.
    FakeConnector other(sys.certs().ca, sys.certs().connector_other_crt, sys.certs().connector_other_key,
                        sys.registration_port, "other", "attacker-other");
    ASSERT_TRUE(other.send(config_message(policy::sign_snapshot(hostile, real))));
    sys.broker->wait_for_log("\"msg\":\"policy snapshot refused\".*\"reason\":\"identity 'spiffe://postern.dev/connector/other' may not publish config");
    // A publishing identity (a stolen green connector certificate): only
    // the signature counts, and none of these carries a trusted one.
    FakeConnector green(sys.certs().ca, sys.certs().connector_crt, sys.certs().connector_key, sys.registration_port,
                        "demo", "attacker-green");
    for (const pv1::SignedSnapshot* w : {&unsigned_wire, &rogue_wire, &claimed}) {
      ASSERT_TRUE(green.send(config_message(*w)));
    }
    ASSERT_TRUE(wait_until(
        [&] {
          return metric(sys.broker_admin_port, "postern_broker_config_updates_total", {{"result", "untrusted"}}) >= 3;
        },
        5s))
        << sys.broker->log_tail();
    EXPECT_EQ(metric(sys.broker_admin_port, "postern_broker_config_updates_total", {{"result", "not_permitted"}}), 1.0);
  }
  EXPECT_NE(sys.broker->log().find("does not match the snapshot"), std::string::npos);
  EXPECT_NE(sys.broker->log().find("not signed"), std::string::npos);

  // Nothing changed for clients: their keys still go to the real service.
  const auto r = curl({"-H", "x-Gateway-APIKey: client-secret", sys.edge_url("/gateway/demo/1.0/headers")});
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(attacker->log().find("\"msg\":\"request\""), std::string::npos) << attacker->log_tail();
  EXPECT_EQ(metric(sys.edge_admin_port, "postern_edge_config_version"), version_before);

  // And a legitimate edit still goes through (nothing is stuck "stale").
  sys.write_policy(System::default_policy_yaml() +
                   "  - {name: fresh, version: \"1.0\", routing: \"apigateway://demo/\"}\n");
  EXPECT_TRUE(wait_until([&] { return curl({sys.edge_url("/gateway/fresh/1.0/")}).status == 200; }, 10s));
}

// Finding 1, the second half: an edge or broker holding a bad snapshot (one
// signed by a key that leaked, accepted while that key was still trusted)
// recovers to the policy service's current one when the key is withdrawn,
// without a restart.
TEST(Security, SnapshotOfAWithdrawnKeyIsDroppedWithoutARestart) {
  System sys;
  const auto& c = sys.use_private_certs();
  const std::string trusted = sys.dir().file("trusted.pub");
  write_file(trusted, read_file(c.signing_pub) + read_file(c.rogue_signing_pub));
  sys.trusted_key_files = {trusted};
  sys.start_demo();
  sys.start_broker("file_check_interval: 1s\n");
  sys.start_connector();
  sys.start_edge("file_check_interval: 1s\n");
  ASSERT_EQ(curl({sys.edge_url("/gateway/demo/1.0/")}).status, 200);

  // The leaked key signs a hostile snapshot; while it is trusted it wins.
  pv1::Snapshot hostile;
  hostile.set_version(std::uint64_t{1} << 60);
  auto* api = hostile.mutable_config()->add_apis();
  api->set_name("pwned");
  api->set_version("1.0");
  api->set_routing("apigateway://demo/");
  FakeConnector green(c.ca, c.connector_crt, c.connector_key, sys.registration_port, "demo", "leaked-key");
  ASSERT_TRUE(green.send(config_message(policy::sign_snapshot(hostile, crypto::SigningKey::from_file(c.rogue_signing_key)))));
  ASSERT_TRUE(wait_until([&] { return curl({sys.edge_url("/gateway/pwned/1.0/")}).status == 200; }, 10s));
  EXPECT_EQ(curl({sys.edge_url("/gateway/demo/1.0/")}).status, 404);

  // The operator withdraws the key (the Secret's file changes in place).
  const pid_t broker_pid = sys.broker->pid(), edge_pid = sys.edge->pid();
  write_file(trusted + ".tmp", read_file(c.signing_pub));
  std::filesystem::rename(trusted + ".tmp", trusted);
  EXPECT_TRUE(wait_until([&] { return curl({sys.edge_url("/gateway/demo/1.0/")}).status == 200; }, 15s))
      << sys.edge->log_tail();
  EXPECT_EQ(curl({sys.edge_url("/gateway/pwned/1.0/")}).status, 404);
  EXPECT_TRUE(sys.broker->running());
  EXPECT_TRUE(sys.edge->running());
  EXPECT_EQ(sys.broker->pid(), broker_pid);
  EXPECT_EQ(sys.edge->pid(), edge_pid);
  EXPECT_GE(sys.broker->count_log("\"msg\":\"trusted keys reloaded\""), 1);
}

// ---------------------------------------------------------------- sessions

// Finding 2: a connector named another connector's Attach session on the
// streams it pulled exchanges on, and received that connector's traffic.
// Lanes carry the same check.
TEST(Security, ASessionCannotBeUsedByAnotherIdentity) {
  System sys;
  sys.start_demo();
  sys.start_broker();
  FakeConnector victim(sys.certs().ca, sys.certs().connector_crt, sys.certs().connector_key, sys.registration_port,
                       "demo", "victim");
  FakeConnector attacker(sys.certs().ca, sys.certs().connector_other_crt, sys.certs().connector_other_key,
                         sys.registration_port, "other", "attacker");
  // 128 bits from the CSPRNG, and different every time.
  EXPECT_EQ(victim.session().size(), 32u);
  EXPECT_EQ(victim.session().find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_NE(victim.session(), attacker.session());

  for (int i = 0; i < 2; ++i) {
    auto stolen = attacker.lane(victim.session());
    tv1::Frame f;
    EXPECT_FALSE(stolen->read(f)) << "the broker handed the attacker a frame";
    const auto st = stolen->stream->Finish();
    EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << st.error_message();
  }
  EXPECT_EQ(metric(sys.broker_admin_port, "postern_broker_registration_refusals_total",
                   {{"reason", "session_identity_mismatch"}}),
            2.0);
  EXPECT_EQ(sys.broker->count_log("\"msg\":\"stream refused: it names another identity's session\".*"
                                  "\"identity\":\"spiffe://postern.dev/connector/other\""),
            2);
  // Never logged in full.
  EXPECT_EQ(sys.broker->log().find(victim.session()), std::string::npos);
  EXPECT_EQ(sys.broker->log().find(attacker.session()), std::string::npos);
}

// ---------------------------------------------------------------- paths

// Finding 3: "/gateway/filespub/1.0/../priv/secret.txt" reached a file the
// key-protected API guards, and the native service saw "/pub/../priv/...".
TEST(Security, DotSegmentsAndEncodedSeparatorsCannotLeaveTheApi) {
  System sys;
  sys.start_demo();
  sys.start_policy(R"(apis:
  - {name: filespub, version: "1.0", routing: "apigateway://demo/open/"}
  - {name: filespriv, version: "1.0", routing: "apigateway://demo/keyed/", policies: {identify: {identifiers: [API_KEY]}}}
)");
  sys.start_broker();
  sys.start_connector();
  sys.start_edge();
  auto get = [&](const std::string& path) { return curl({"--path-as-is", sys.edge_url(path)}).status; };
  ASSERT_EQ(get("/gateway/filespub/1.0/headers"), 200);
  // Normalised first, then routed: the private API's own policy answers.
  EXPECT_EQ(get("/gateway/filespub/1.0/../../filespriv/1.0/headers"), 401);
  EXPECT_EQ(get("/gateway/filespub/1.0/./../1.0/../../filespriv/1.0/headers"), 401);
  EXPECT_EQ(get("/gateway/filespub/1.0/../keyed/headers"), 404);
  // Encoded dot segments and separators, backslashes, dot segments with
  // parameters: refused outright.
  for (const std::string p :
       {"/gateway/filespub/1.0/%2e%2e/%2e%2e/filespriv/1.0/headers", "/gateway/filespub/1.0/..%2f..%2ffilespriv/1.0/headers",
        "/gateway/filespub/1.0/..%2F..%2Fkeyed/headers", "/gateway/filespub/1.0/..%5c..%5ckeyed/headers",
        "/gateway/filespub/1.0/..;/..;/filespriv/1.0/headers", "/gateway/filespub/1.0/.%2E/keyed/headers"}) {
    EXPECT_EQ(get(p), 400) << p;
  }
  const auto raw = parse_response(raw_exchange(
      sys.edge_port, "GET /gateway/filespub/1.0/..\\..\\keyed/headers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
  EXPECT_EQ(raw.status, 400);
  // The native service only ever saw paths under the API's own prefix.
  EXPECT_FALSE(native_saw(sys, "/keyed")) << sys.demo->log_tail();
  EXPECT_FALSE(native_saw(sys, "..")) << sys.demo->log_tail();
}

// ---------------------------------------------------------------- bytes

// Finding 4: a header byte that is not UTF-8 (legal HTTP) made protobuf
// refuse a frame; the shared stream ended, and every WebSocket session on
// it closed with 1011.
TEST(Security, ANonUtf8HeaderCrossesIntactAndEndsNoSharedStream) {
  System sys;
  sys.start_demo();
  sys.start_policy(R"(apis:
  - {name: demo, version: "1.0", routing: "apigateway://demo/"}
  - {name: chat, version: "1.0", type: websocket, routing: "apigateway://demo/api/demo/"}
)");
  sys.start_broker();
  sys.start_connector();
  sys.start_edge();
  const std::string room = "ws://127.0.0.1:" + std::to_string(sys.edge_port) + "/gateway/chat/1.0/utf8?user=alice";
  auto alice = std::async(std::launch::async, [&] { return ws_client({"script", room, "sleep=3", "send=still-here", "recv=1"}); });
  ASSERT_TRUE(wait_until([&] { return sys.edge->count_log("\"msg\":\"websocket open\"") >= 1; }, 10s));

  const std::string upgrade =
      "GET /gateway/chat/1.0/utf8?user=mallory HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
      "X-Bad: caf\xff\xfe\r\n\r\n";
  const std::string answer = raw_exchange(sys.edge_port, upgrade, 1500ms);
  EXPECT_TRUE(answer.starts_with("HTTP/1.1 101")) << answer;

  const auto got = alice.get();
  EXPECT_EQ(num(got, "status"), 101);
  EXPECT_NE(boost::json::serialize(got).find("still-here"), std::string::npos) << boost::json::serialize(got);
  EXPECT_NE(num(got, "close_code"), 1011) << boost::json::serialize(got);

  // The same byte on a REST request crosses intact (it was a 502).
  const auto rest = parse_response(raw_exchange(
      sys.edge_port, "GET /gateway/demo/1.0/headers HTTP/1.1\r\nHost: x\r\nX-Bad: caf\xff\r\nConnection: close\r\n\r\n"));
  EXPECT_EQ(rest.status, 200) << rest.head;
  EXPECT_NE(rest.body.find("X-Bad"), std::string::npos) << rest.body;
}

// ---------------------------------------------------------------- relay port

// Finding 5: the relay port took anyone, and WatchConfig over it carries
// hashed credentials.
TEST(Security, TheRelayPortAdmitsOnlyEdgeIdentities) {
  System sys;
  sys.relay_mtls = true;
  sys.start_all();
  EXPECT_EQ(curl({sys.edge_url("/gateway/demo/1.0/")}).status, 200);

  auto watch_with = [&](const std::string& cert, const std::string& key) {
    grpc::SslCredentialsOptions o;
    o.pem_root_certs = read_file(sys.certs().ca);
    if (!cert.empty()) {
      o.pem_cert_chain = read_file(cert);
      o.pem_private_key = read_file(key);
    }
    auto stub = tv1::Relay::NewStub(
        grpc::CreateChannel("localhost:" + std::to_string(sys.relay_port), grpc::SslCredentials(o)));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 5s);
    pv1::WatchRequest req;
    auto reader = stub->WatchConfig(&ctx, req);
    pv1::SignedSnapshot s;
    const bool got = reader->Read(&s);
    if (got) ctx.TryCancel();
    return std::make_pair(got, reader->Finish());
  };
  // A connector's certificate from the same CA does not make an edge.
  auto [got, st] = watch_with(sys.certs().connector_crt, sys.certs().connector_key);
  EXPECT_FALSE(got);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << st.error_message();
  // No certificate: no TLS session at all.
  std::tie(got, st) = watch_with("", "");
  EXPECT_FALSE(got);
  EXPECT_NE(st.error_code(), grpc::StatusCode::OK);
  // The edge's own identity works.
  std::tie(got, st) = watch_with(sys.certs().edge_client_crt, sys.certs().edge_client_key);
  EXPECT_TRUE(got) << st.error_message();
  EXPECT_GE(metric(sys.broker_admin_port, "postern_broker_registration_refusals_total", {{"reason", "not_an_edge"}}), 1.0);
}

// A client of the relay port as a compromised edge (or anything else in the
// DMZ) would write it: one exchange on a lane with `head`, and what came
// back.
struct Answer {
  unsigned status = 0;
  tv1::ErrorCode error = tv1::ERROR_CODE_UNSPECIFIED;
  std::string error_message;
};

Answer invoke_as_fake_edge(std::uint16_t relay_port, const tv1::RequestHead& head) {
  auto stub = tv1::Relay::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(relay_port), grpc::InsecureChannelCredentials()));
  auto lane = open_edge_lane(*stub);
  tv1::Frame f;
  f.set_exchange(1);
  *f.mutable_request_head() = head;
  tv1::Frame end;
  end.set_exchange(1);
  end.mutable_end();
  lane->write({std::move(f), std::move(end)});
  Answer a;
  tv1::Frame in;
  while (lane->read_for(1, in)) {
    if (in.has_response_head()) a.status = in.response_head().status();
    if (in.has_error()) {
      a.error = in.error().code();
      a.error_message = in.error().message();
    }
    if (in.has_end() || in.has_error()) break;
  }
  lane->finish();
  return a;
}

tv1::RequestHead head_for(const std::string& api, const std::string& target) {
  tv1::RequestHead h;
  h.set_request_id("forged-" + api);
  h.set_alias("demo");
  h.set_api(api);
  h.set_method("GET");
  h.set_target(target);
  h.set_http_version(11);
  return h;
}

const char* kThreeApis = R"(apis:
  - {name: open, version: "1.0", routing: "apigateway://demo/open/"}
  - {name: secured, version: "1.0", routing: "apigateway://demo/keyed/", policies: {identify: {identifiers: [API_KEY]}}}
  - name: inside
    version: "1.0"
    routing: "apigateway://demo/inside/"
    enforcement: GREEN
    policies: {identify: {identifiers: [API_KEY]}}
applications:
  - {name: app, api_keys: [{key_file: keys/app}], apis: [secured, inside]}
)";

void start_three_apis(System& sys) {
  std::filesystem::create_directories(sys.dir().file("keys"));
  write_file(sys.dir().file("keys/app"), "app-key-123");
  sys.start_demo();
  sys.start_policy(kThreeApis);
  sys.start_broker();
  sys.start_connector();
  sys.start_edge();
}

// Finding 5: the connector took the edge's word for which API a request
// belonged to, and skipped that API's policies.
TEST(Security, TheConnectorFindsTheApiItselfWhateverTheEdgeClaims) {
  System sys;
  start_three_apis(sys);
  // Control: a request where the edge's word is right.
  EXPECT_EQ(invoke_as_fake_edge(sys.relay_port, head_for("open", "/open/headers")).status, 200u);
  // Claiming the open API for the key-protected paths: the connector
  // enforces the API that owns them, green or DMZ.
  EXPECT_EQ(invoke_as_fake_edge(sys.relay_port, head_for("open", "/keyed/headers")).status, 401u);
  EXPECT_EQ(invoke_as_fake_edge(sys.relay_port, head_for("open", "/inside/headers")).status, 401u);
  EXPECT_EQ(invoke_as_fake_edge(sys.relay_port, head_for("secured", "/inside/headers")).status, 401u);
  // Naming no API (as for a default alias): enforced here, whatever the
  // API's enforcement.
  EXPECT_EQ(invoke_as_fake_edge(sys.relay_port, head_for("", "/gateway/secured/1.0/headers")).status, 401u);
  EXPECT_FALSE(native_saw(sys, "\"target\":\"/keyed")) << sys.demo->log_tail();
  EXPECT_FALSE(native_saw(sys, "\"target\":\"/inside")) << sys.demo->log_tail();
  // Through the real edge, the key opens both.
  EXPECT_EQ(curl({"-H", "x-Gateway-APIKey: app-key-123", sys.edge_url("/gateway/secured/1.0/headers")}).status, 200);
  EXPECT_EQ(curl({"-H", "x-Gateway-APIKey: app-key-123", sys.edge_url("/gateway/inside/1.0/headers")}).status, 200);
}

// Finding 5: a CR LF in a header value from the tunnel was written to the
// native service verbatim (request splitting).
TEST(Security, HeadersFromTheTunnelAreCheckedBeforeTheNativeServiceSeesThem) {
  System sys;
  start_three_apis(sys);
  auto with_header = [&](const std::string& name, const std::string& value) {
    auto h = head_for("open", "/open/headers");
    auto* f = h.add_headers();
    f->set_name(name);
    f->set_value(value);
    return invoke_as_fake_edge(sys.relay_port, h);
  };
  auto a = with_header("X-A", "1\r\nX-Injected: yes");
  EXPECT_EQ(a.error, tv1::ERROR_CODE_BAD_REQUEST) << a.error_message;
  EXPECT_NE(a.error_message.find("CR, LF or NUL"), std::string::npos) << a.error_message;
  EXPECT_EQ(with_header("Bad Name", "x").error, tv1::ERROR_CODE_BAD_REQUEST);
  EXPECT_EQ(with_header("X-A", std::string("a\0b", 3)).error, tv1::ERROR_CODE_BAD_REQUEST);
  auto smuggle = head_for("open", "/open/x HTTP/1.1\r\nHost: y\r\n\r\nGET /keyed/headers");
  EXPECT_EQ(invoke_as_fake_edge(sys.relay_port, smuggle).error, tv1::ERROR_CODE_BAD_REQUEST);
  auto dotted = head_for("open", "/open/../keyed/headers");
  EXPECT_EQ(invoke_as_fake_edge(sys.relay_port, dotted).error, tv1::ERROR_CODE_BAD_REQUEST);
  auto method = head_for("open", "/open/headers");
  method.set_method("GET /keyed");
  EXPECT_EQ(invoke_as_fake_edge(sys.relay_port, method).error, tv1::ERROR_CODE_BAD_REQUEST);
  EXPECT_FALSE(native_saw(sys, "X-Injected"));
  EXPECT_FALSE(native_saw(sys, "/keyed")) << sys.demo->log_tail();
  // A value with obs-text is the sender's business: it passes.
  EXPECT_EQ(with_header("X-A", "caf\xe9").status, 200u);
}

// ---------------------------------------------------------------- passwords

// Finding 6: Basic passwords were unsalted SHA-256 hashes, and reached every
// edge.
TEST(Security, BasicPasswordsAreSaltedSlowHashes) {
  const auto made = run_command(
      {"sh", "-c", "printf 's3cret pass' | \"$0\" hash-password --iterations 100000", binary_path("postern-policy")});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  const std::string hash = made.out.substr(0, made.out.find('\n'));
  EXPECT_TRUE(hash.starts_with("$pbkdf2-sha256$i=100000$")) << hash;
  const auto again = run_command(
      {"sh", "-c", "printf 's3cret pass' | \"$0\" hash-password --iterations 100000", binary_path("postern-policy")});
  EXPECT_NE(again.out, made.out);  // salted

  System sys;
  std::filesystem::create_directories(sys.dir().file("p"));
  // The old field is refused by name, and so is an unsalted hash.
  write_file(sys.dir().file("p/old.yaml"), R"(applications:
  - {name: a, basic: [{username: u, password_sha256: 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8}]}
)");
  write_file(sys.dir().file("p/sha.yaml"), R"(applications:
  - {name: a, basic: [{username: u, password_hash: 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8}]}
)");
  for (const char* f : {"p/old.yaml", "p/sha.yaml"}) {
    const auto v = run_command({binary_path("postern-policy"), "validate", sys.dir().file(f)});
    EXPECT_EQ(v.exit_code, 1) << f << ": " << v.out << v.err;
    EXPECT_NE(v.err.find(f[2] == 'o' ? "password_sha256" : "hash-password"), std::string::npos) << v.err;
  }

  sys.start_demo();
  sys.start_policy(R"(apis:
  - {name: basic, version: "1.0", routing: "apigateway://demo/", policies: {identify: {identifiers: [BASIC]}}}
applications:
  - {name: a, basic: [{username: u, password_hash: ")" + hash + R"("}], apis: [basic]}
)");
  sys.start_broker();
  sys.start_connector();
  sys.start_edge();
  EXPECT_EQ(curl({"-u", "u:s3cret pass", sys.edge_url("/gateway/basic/1.0/")}).status, 200);
  EXPECT_EQ(curl({"-u", "u:s3cret pasS", sys.edge_url("/gateway/basic/1.0/")}).status, 401);
  EXPECT_EQ(curl({"-u", "u:s3cret pass", sys.edge_url("/gateway/basic/1.0/")}).status, 200);  // cached
  // The admin listing names users, never hashes.
  const auto apps = curl({"http://127.0.0.1:" + std::to_string(sys.policy_admin_port) + "/applications"});
  EXPECT_EQ(apps.body.find("pbkdf2"), std::string::npos) << apps.body;
}

// ---------------------------------------------------------------- overlaps

// Finding 7: the quick start's open API reached the same native paths as
// its keyed ones, so the key protected nothing.
TEST(Security, ApisThatReachTheSameNativePathsWithDifferentPoliciesAreRefused) {
  TempDir dir("overlap");
  write_file(dir.file("policy.yaml"), R"(apis:
  - {name: demo, version: "1.0", routing: "apigateway://demo/"}
  - {name: secured, version: "1.0", routing: "apigateway://demo/", policies: {identify: {identifiers: [API_KEY]}}}
  - {name: chat, version: "1.0", type: websocket, routing: "apigateway://demo/api/demo/"}
  - name: chat-secured
    version: "1.0"
    type: websocket
    routing: "apigateway://demo/api/demo/secured/"
    policies: {identify: {identifiers: [API_KEY]}}
)");
  auto v = run_command({binary_path("postern-policy"), "validate", dir.file("policy.yaml")});
  EXPECT_EQ(v.exit_code, 1);
  EXPECT_NE(v.err.find("apis[1].routing: APIs 'demo' and 'secured' both reach native prefix '/'"), std::string::npos)
      << v.err;
  EXPECT_NE(v.err.find("apis[3].routing: native prefix '/api/demo/secured'"), std::string::npos) << v.err;
  // The shipped samples are free of overlaps.
  for (const char* sample : {"deploy/local/policy.yaml", "deploy/compose/config/policy.yaml"}) {
    const std::string copy = dir.file("sample.yaml");
    write_file(copy, read_file(source_path(sample)));
    write_file(dir.file("demo-api-key"), "k");
    v = run_command({binary_path("postern-policy"), "validate", copy});
    EXPECT_EQ(v.exit_code, 0) << sample << ": " << v.err;
    EXPECT_EQ(v.err.find("warning"), std::string::npos) << sample << ": " << v.err;
  }
}

// ---------------------------------------------------------------- forwarding

// Finding 8: a client's X-Forwarded-For and Forwarded were passed on (and
// believed), and a crafted Host injected Forwarded parameters.
TEST(Security, ForwardingHeadersComeFromTheEdge) {
  System sys;
  sys.start_demo();
  sys.start_policy(R"(apis:
  - {name: demo, version: "1.0", routing: "apigateway://demo/open/"}
  - name: allowlisted
    version: "1.0"
    routing: "apigateway://demo/keyed/"
    policies: {threat_protection: {ip_allow: {cidrs: ["203.0.113.9"]}}}
)");
  sys.start_broker();
  sys.start_connector();
  sys.start_edge();
  const std::vector<std::string> spoof = {"-H", "X-Forwarded-For: 203.0.113.9", "-H", "Forwarded: for=203.0.113.9",
                                          "-H", "X-Real-IP: 203.0.113.9"};
  auto args = spoof;
  args.push_back(sys.edge_url("/gateway/allowlisted/1.0/headers"));
  EXPECT_EQ(curl(args).status, 403);
  args = spoof;
  args.push_back(sys.edge_url("/gateway/demo/1.0/headers"));
  const auto seen = curl(args);
  ASSERT_EQ(seen.status, 200);
  EXPECT_EQ(seen.body.find("203.0.113.9"), std::string::npos) << seen.body;
  EXPECT_NE(seen.body.find("[\"X-Forwarded-For\",\"127.0.0.1\"]"), std::string::npos) << seen.body;

  // Host: validated, so it can be quoted in Forwarded; missing or repeated in
  // HTTP/1.1 is a 400.
  auto raw = [&](const std::string& head) {
    return parse_response(raw_exchange(sys.edge_port, "GET /gateway/demo/1.0/headers HTTP/1.1\r\n" + head +
                                                          "Connection: close\r\n\r\n"))
        .status;
  };
  EXPECT_EQ(raw("Host: a\";for=10.6.6.6;by=\"x\r\n"), 400);
  EXPECT_EQ(raw(""), 400);
  EXPECT_EQ(raw("Host: a\r\nHost: b\r\n"), 400);
  EXPECT_EQ(raw("Host: api.example.com:8443\r\n"), 200);
  EXPECT_FALSE(native_saw(sys, "10.6.6.6"));

  // Behind a trusted load balancer, its headers are kept and believed.
  sys.edge.reset();
  sys.start_edge("trusted_proxies: [\"127.0.0.1\"]\n");
  args = spoof;
  args.push_back(sys.edge_url("/gateway/allowlisted/1.0/headers"));
  const auto through_lb = curl(args);
  EXPECT_EQ(through_lb.status, 200);
  EXPECT_NE(through_lb.body.find("[\"X-Forwarded-For\",\"203.0.113.9, 127.0.0.1\"]"), std::string::npos)
      << through_lb.body;
}

// ---------------------------------------------------------------- certificates

std::string serial_seen_on(std::uint16_t port, const Certs& c) {
  const auto r = run_command(
      {"sh", "-c",
       "openssl s_client -connect 127.0.0.1:\"$0\" -servername localhost -CAfile \"$1\" -cert \"$2\" -key \"$3\" "
       "</dev/null 2>/dev/null | openssl x509 -noout -serial",
       std::to_string(port), c.ca, c.connector_crt, c.connector_key},
      10s);
  return r.out;
}

// A new certificate and key for `name` (broker, edge) from the same CA,
// swapped in with renames as cert-manager does. Returns its serial line.
std::string reissue(const Certs& c, const std::string& name) {
  const std::string d = c.dir;
  const auto r = run_command(
      {"sh", "-c",
       "set -e; cd \"$0\"; "
       "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout \"$1.new.key\" "
       "  -subj \"/O=Postern DEV ONLY/CN=$1\" -out \"$1.csr\" 2>/dev/null; "
       "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > \"$1.ext\"; "
       "openssl x509 -req -in \"$1.csr\" -CA ca.crt -CAkey ca.key -set_serial 0x$(openssl rand -hex 16) -days 7 "
       "  -extfile \"$1.ext\" -out \"$1.new.crt\" 2>/dev/null; "
       "mv \"$1.new.key\" \"$1.key\"; mv \"$1.new.crt\" \"$1.crt\"; "
       "openssl x509 -in \"$1.crt\" -noout -serial",
       d, name});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return r.out;
}

// Finding 9: certificates were read once at start; cert-manager's renewals
// were never used until a restart.
TEST(Security, RenewedCertificatesAreUsedWithoutDroppingStreams) {
  System sys;
  const auto& c = sys.use_private_certs();
  sys.edge_tls = true;
  sys.start_demo();
  sys.start_broker("file_check_interval: 1s\n");
  sys.start_connector({.extra_yaml = "file_check_interval: 1s\n"});
  sys.start_edge("file_check_interval: 1s\n");
  const std::string url = "https://localhost:" + std::to_string(sys.edge_port) + "/gateway/demo/1.0/";
  ASSERT_EQ(curl({"--cacert", c.ca, url}).status, 200);
  const std::string old_broker = serial_seen_on(sys.registration_port, c);
  const std::string old_edge = serial_seen_on(sys.edge_port, c);
  ASSERT_FALSE(old_broker.empty());

  const std::string new_broker = reissue(c, "broker");
  const std::string new_edge = reissue(c, "edge");
  ASSERT_NE(new_broker, old_broker);
  EXPECT_TRUE(wait_until([&] { return serial_seen_on(sys.registration_port, c) == new_broker; }, 15s));
  EXPECT_TRUE(wait_until([&] { return serial_seen_on(sys.edge_port, c) == new_edge; }, 15s));
  // The established streams carried on: no reattach, requests served.
  EXPECT_EQ(sys.connectors[0]->count_log("\"msg\":\"attached\""), 1);
  EXPECT_EQ(curl({"--cacert", c.ca, url}).status, 200);
  EXPECT_GE(sys.edge->count_log("\"msg\":\"tls certificate reloaded\""), 1);
}

// ---------------------------------------------------------------- framing

// Finding 10: a Transfer-Encoding other than a single "chunked" left the
// body to be parsed as a second request (request smuggling).
TEST(Security, TransferEncodingOtherThanChunkedIs400AndClose) {
  System sys;
  sys.start_all();
  const std::string smuggled = "GET /gateway/demo/1.0/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
  for (const std::string te : {"gzip", "chunked, gzip", "xchunked", "chunked, chunked", "identity"}) {
    const std::string raw = raw_exchange(sys.edge_port, "POST /gateway/demo/1.0/echo HTTP/1.1\r\nHost: x\r\n"
                                                        "Transfer-Encoding: " + te + "\r\n\r\n" + smuggled);
    EXPECT_EQ(parse_response(raw).status, 400) << te << ":\n" << raw;
    EXPECT_EQ(raw.find("HTTP/1.1", 1), std::string::npos) << te << ": a second response\n" << raw;
  }
  const std::string two = raw_exchange(sys.edge_port, "POST /gateway/demo/1.0/echo HTTP/1.1\r\nHost: x\r\n"
                                                      "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled);
  EXPECT_EQ(parse_response(two).status, 400) << two;
  const std::string old = raw_exchange(sys.edge_port, "POST /gateway/demo/1.0/echo HTTP/1.0\r\n"
                                                      "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled);
  EXPECT_EQ(parse_response(old).status, 400) << old;
  const std::string both = raw_exchange(sys.edge_port, "POST /gateway/demo/1.0/echo HTTP/1.1\r\nHost: x\r\n"
                                                       "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled);
  EXPECT_EQ(parse_response(both).status, 400) << both;
  EXPECT_FALSE(native_saw(sys, "smuggled")) << sys.demo->log_tail();
}

// Finding 11: request trailers reached the native service unfiltered, and
// a trailer named like a head field was split by position, delivering the
// stripped API key.
TEST(Security, TrailersCannotCarryWhatTheHeadMayNot) {
  System sys;
  std::filesystem::create_directories(sys.dir().file("keys"));
  write_file(sys.dir().file("keys/app"), "app-key-123");
  sys.start_demo();
  sys.start_policy(R"(apis:
  - name: secured
    version: "1.0"
    routing: "apigateway://demo/keyed/"
    policies:
      identify: {identifiers: [API_KEY]}
      transform: {request_headers: {remove: [X-Drop]}}
applications:
  - {name: app, api_keys: [{key_file: keys/app}], apis: [secured]}
)");
  sys.start_broker();
  sys.start_connector();
  sys.start_edge();
  const std::string raw = raw_exchange(
      sys.edge_port,
      "POST /gateway/secured/1.0/trailers HTTP/1.1\r\nHost: x\r\nX-Gateway-APIKey: app-key-123\r\n"
      "Transfer-Encoding: chunked\r\nTE: trailers\r\nConnection: close\r\n\r\n"
      "3\r\nabc\r\n0\r\nX-Gateway-APIKey: app-key-123\r\nAuthorization: Bearer stolen\r\n"
      "X-Forwarded-For: 10.6.6.6\r\nX-Drop: 1\r\nCookie: s=1\r\nX-Checksum: abc\r\n\r\n");
  EXPECT_TRUE(raw.starts_with("HTTP/1.1 200")) << raw;
  EXPECT_NE(raw.find("X-Echo-X-Checksum: abc"), std::string::npos) << raw;
  for (const char* gone : {"X-Echo-X-Gateway-APIKey", "X-Echo-Authorization", "X-Echo-X-Forwarded-For", "X-Echo-X-Drop",
                           "X-Echo-Cookie", "app-key-123", "stolen"}) {
    EXPECT_EQ(raw.find(gone), std::string::npos) << gone << " reached the native service:\n" << raw;
  }
}

// ---------------------------------------------------------------- logs

// Finding 13: an API key sent as a path parameter was logged, and raw high
// bytes made log lines that are not valid JSON.
TEST(Security, LogsRedactPathParametersAndStayValidJson) {
  System sys;
  sys.start_all();
  EXPECT_EQ(curl({sys.edge_url("/gateway/demo/1.0/x;x-Gateway-APIKey=topsecret-key/y")}).status, 404);
  raw_exchange(sys.edge_port, "GET /gateway/demo/1.0/caf\xe9\xff HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  raw_exchange(sys.edge_port, "GET /gateway/demo/1.0/headers HTTP/1.1\r\nHost: x\r\nX-Request-Id: \xff\xfe\r\n"
                              "Connection: close\r\n\r\n");
  std::this_thread::sleep_for(200ms);
  for (Process* p : {sys.edge.get(), sys.broker.get(), sys.connectors[0].get()}) {
    const std::string log = p->log();
    EXPECT_EQ(log.find("topsecret-key"), std::string::npos) << p->log_tail();
    std::size_t lines = 0;
    for (std::size_t at = 0; at < log.size();) {
      const auto nl = log.find('\n', at);
      const std::string line = log.substr(at, nl - at);
      at = nl == std::string::npos ? log.size() : nl + 1;
      if (line.empty()) continue;
      ++lines;
      boost::system::error_code ec;
      boost::json::parse(line, ec);
      EXPECT_FALSE(ec) << "not JSON: " << line;
    }
    EXPECT_GT(lines, 0u);
  }
  EXPECT_NE(sys.edge->log().find("x-Gateway-APIKey=REDACTED"), std::string::npos) << sys.edge->log_tail();
}

}  // namespace
}  // namespace postern::testing
