// libFuzzer target: the broker's handling of what a connector sends it.
//
// A real broker runs in this process (registration port with mTLS, relay
// port in the clear, on 127.0.0.1). Each input is a script of records
// [kind][length: 2 bytes][payload], each payload a protobuf message:
//   kind % 5 == 0  ConnectorMessage on the Attach stream (after a valid Hello)
//   kind % 5 == 1  Frame from the connector on the Pull stream that got the request
//   kind % 5 == 2  Frame from the edge on the Invoke stream, after its head
//   kind % 5 == 3  Frame from the connector on its Sessions stream, where the
//                  broker opened a WebSocket session (session 0: that one's)
//   kind % 5 == 4  Frame from the edge on its Sessions stream, where it
//                  opened that session (session 0: its id, 1)
// A payload that does not parse as its message is sent as a body chunk
// holding those bytes. Whatever the frames, the exchange must end for the
// edge with a response or an error, promptly, the edge's Sessions stream
// must still answer a new session once the connector's has gone, and the
// broker must still accept the next connector; a hang or a crash is a
// finding.
#include <grpcpp/grpcpp.h>
#include <prometheus/registry.h>

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>

#include "broker/broker.hpp"
#include "common/config/yaml_proto.hpp"
#include "common/service_main.hpp"
#include "postern/tunnel/v1/tunnel.grpc.pb.h"
#include "support/certs.hpp"
#include "support/files.hpp"

namespace {

namespace tv1 = postern::tunnel::v1;
using namespace std::chrono_literals;

struct Harness {
  boost::asio::io_context ioc{1};
  std::unique_ptr<postern::broker::Broker> broker;
  std::thread io;
  std::unique_ptr<tv1::Registration::Stub> registration;
  std::unique_ptr<tv1::Relay::Stub> relay;

  Harness() {
    postern::init_logging("broker", "error", "");
    const auto& certs = postern::testing::test_certs();
    std::string y;
    y += "id: broker-fuzz\n";
    y += "registration:\n  listen: \"127.0.0.1:0\"\n";
    y += "  tls: {cert_file: \"" + certs.broker_crt + "\", key_file: \"" + certs.broker_key + "\", client_ca_file: \"" +
         certs.ca + "\"}\n";
    y += "relay: {listen: \"127.0.0.1:0\"}\n";
    y += "identities: [{identity: \"spiffe://postern.dev/connector/green\", aliases: [fuzz]}]\n";
    y += "trusted_config_keys: [\"" + certs.signing_pub + "\"]\n";
    y += "heartbeat_interval: 1s\nheartbeat_timeout: 5s\npark_wait: 300ms\ndrain_timeout: 1s\n";
    postern::config::v1::BrokerConfig cfg;
    postern::config::load_yaml_string(y, "broker-fuzz.yaml", cfg);
    broker = std::make_unique<postern::broker::Broker>(ioc, cfg, std::make_shared<prometheus::Registry>());
    broker->start();
    io = std::thread([this] {
      auto guard = boost::asio::make_work_guard(ioc);
      ioc.run();
    });

    grpc::SslCredentialsOptions o;
    o.pem_root_certs = postern::testing::read_file(certs.ca);
    o.pem_cert_chain = postern::testing::read_file(certs.connector_crt);
    o.pem_private_key = postern::testing::read_file(certs.connector_key);
    registration = tv1::Registration::NewStub(grpc::CreateChannel(
        "localhost:" + std::to_string(broker->registration_port()), grpc::SslCredentials(o)));
    relay = tv1::Relay::NewStub(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(broker->relay_port()), grpc::InsecureChannelCredentials()));
  }
};

Harness& harness() {
  static Harness* h = new Harness;  // lives until the process exits
  return *h;
}

struct Record {
  int kind;
  std::string payload;
};

std::vector<Record> parse_script(const std::uint8_t* data, std::size_t size) {
  std::vector<Record> out;
  std::size_t i = 0;
  while (i + 3 <= size && out.size() < 64) {
    const int kind = data[i] % 5;
    const std::size_t len = std::min<std::size_t>(data[i + 1] | (data[i + 2] << 8), size - i - 3);
    out.push_back({kind, std::string(reinterpret_cast<const char*>(data) + i + 3, len)});
    i += 3 + len;
  }
  return out;
}

tv1::Frame as_frame(const std::string& payload) {
  tv1::Frame f;
  if (!f.ParseFromString(payload)) {
    f.Clear();
    f.mutable_body()->set_data(payload);
  }
  return f;
}

void deadline(grpc::ClientContext& ctx, std::chrono::milliseconds d) {
  ctx.set_deadline(std::chrono::system_clock::now() + d);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Harness& h = harness();
  const auto script = parse_script(data, size);

  // Attach with a valid Hello: the broker must welcome every new connector,
  // whatever the last input did.
  grpc::ClientContext attach_ctx;
  deadline(attach_ctx, 5s);
  auto attach = h.registration->Attach(&attach_ctx);
  tv1::ConnectorMessage hello;
  hello.mutable_hello()->set_connector_id("fuzz-connector");
  hello.mutable_hello()->add_aliases("fuzz");
  tv1::BrokerMessage welcome;
  if (!attach->Write(hello) || !attach->Read(&welcome) || !welcome.has_welcome()) {
    const auto st = attach->Finish();
    std::fprintf(stderr, "broker refused a valid connector: %s\n", st.error_message().c_str());
    __builtin_trap();
  }
  const std::string session = welcome.welcome().session_id();

  // The connector's Sessions stream, registered by the time the exchange
  // below has made its round trip through the broker (nothing acknowledges
  // it).
  grpc::ClientContext csess_ctx;
  deadline(csess_ctx, 5s);
  auto csess = h.registration->Sessions(&csess_ctx);
  tv1::Frame park;
  park.mutable_park()->set_session_id(session);
  csess->Write(park);

  // A parked Pull stream, then an edge's exchange for the alias.
  grpc::ClientContext pull_ctx;
  deadline(pull_ctx, 5s);
  auto pull = h.registration->Pull(&pull_ctx);
  pull->Write(park);

  grpc::ClientContext invoke_ctx;
  deadline(invoke_ctx, 5s);
  auto invoke = h.relay->Invoke(&invoke_ctx);
  tv1::Frame head;
  auto* rh = head.mutable_request_head();
  rh->set_request_id("fuzz");
  rh->set_alias("fuzz");
  rh->set_method("POST");
  rh->set_target("/x");
  rh->set_content_length(-1);
  invoke->Write(head);

  tv1::Frame handed;
  const bool got_head = pull->Read(&handed);

  // Shared sessions: an edge's Sessions stream, with a WebSocket session
  // opened on it (the connector's stream was opened before the Pull).
  grpc::ClientContext esess_ctx;
  deadline(esess_ctx, 8s);
  auto esess = h.relay->Sessions(&esess_ctx);
  tv1::Frame open;
  open.set_session(1);
  auto* wh = open.mutable_request_head();
  wh->set_request_id("fuzz-ws");
  wh->set_alias("fuzz");
  wh->set_method("GET");
  wh->set_target("/ws");
  wh->set_websocket(true);
  esess->Write(open);
  tv1::Frame opened;
  const bool routed = csess->Read(&opened) && opened.has_request_head();
  const std::uint64_t routed_id = routed ? opened.session() : 0;

  for (const auto& r : script) {
    if (r.kind == 0) {
      tv1::ConnectorMessage m;
      if (m.ParseFromString(r.payload)) attach->Write(m);
    } else if (r.kind == 1) {
      if (got_head) pull->Write(as_frame(r.payload));
    } else if (r.kind == 2) {
      invoke->Write(as_frame(r.payload));
    } else if (r.kind == 3) {
      auto f = as_frame(r.payload);
      if (f.session() == 0) f.set_session(routed_id);
      if (routed) csess->Write(f);
    } else {
      auto f = as_frame(r.payload);
      if (f.session() == 0) f.set_session(1);
      esess->Write(f);
    }
  }
  // The connector's Sessions stream goes away; a new session on the edge's
  // stream is answered (no connector carries sessions now, or that one is
  // lost), whatever came before.
  csess->WritesDone();
  csess_ctx.TryCancel();
  (void)csess->Finish();
  open.set_session(2);
  esess->Write(open);
  bool answered = false;
  for (tv1::Frame g; !answered && esess->Read(&g);) {
    // Frames ready together come in one message (Frame.then).
    answered = g.session() == 2;
    for (const auto& t : g.then()) answered = answered || t.session() == 2;
  }
  esess->WritesDone();
  esess_ctx.TryCancel();
  (void)esess->Finish();
  if (!answered) {
    std::fprintf(stderr, "a session opened on the edge's Sessions stream got no answer\n");
    __builtin_trap();
  }
  // The connector goes away: whatever it sent, the edge's exchange ends.
  pull->WritesDone();
  pull_ctx.TryCancel();
  (void)pull->Finish();

  invoke->WritesDone();
  tv1::Frame f;
  while (invoke->Read(&f)) {
  }
  const auto st = invoke->Finish();
  if (st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    std::fprintf(stderr, "the edge's exchange was left hanging\n");
    __builtin_trap();
  }

  attach->WritesDone();
  tv1::BrokerMessage m;
  while (attach->Read(&m)) {
  }
  (void)attach->Finish();
  return 0;
}
