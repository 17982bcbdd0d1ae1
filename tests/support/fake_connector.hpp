#pragma once
// A connector written with the generated tunnel stubs, for tests that break
// the protocol or try what a hostile connector would: it attaches like the
// real one (Hello, heartbeats) and then does what the test tells it.
// Blocking calls on gRPC's sync API; one test thread uses it.

#include <grpcpp/grpcpp.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "postern/tunnel/v1/tunnel.grpc.pb.h"

namespace postern::testing {

/// One lane (Relay.Lane or Registration.Lane) driven frame by frame: what
/// arrives batched in one LaneMessage is handed out one frame at a time.
class FakeLane {
 public:
  using Stream = grpc::ClientReaderWriter<tunnel::v1::LaneMessage, tunnel::v1::LaneMessage>;
  grpc::ClientContext ctx;
  std::unique_ptr<Stream> stream;

  /// The next frame from the far side; false once the lane ended.
  bool read(tunnel::v1::Frame& out);
  /// Reads up to the next frame of exchange `id` (others are skipped).
  bool read_for(std::uint64_t id, tunnel::v1::Frame& out);
  /// The far side sent LaneMessage.drain (seen while reading).
  bool drain_seen() const { return drain_seen_; }
  /// Sends frames as one message.
  bool write(std::vector<tunnel::v1::Frame> frames);
  bool write(tunnel::v1::Frame f) { return write(std::vector<tunnel::v1::Frame>{std::move(f)}); }
  /// Cancels and finishes the call.
  grpc::Status finish();

 private:
  std::deque<tunnel::v1::Frame> buffered_;
  bool drain_seen_ = false;
  bool finished_ = false;
};

/// Opens a Relay.Lane as an edge would (LaneHello "edge" first).
std::unique_ptr<FakeLane> open_edge_lane(tunnel::v1::Relay::Stub& relay);

class FakeConnector {
 public:
  /// Attaches to the registration port as `id`, presenting `cert`/`key`
  /// (PEM files) and asking for `alias`. Throws std::runtime_error when the
  /// broker does not welcome it.
  FakeConnector(const std::string& ca, const std::string& cert, const std::string& key,
                std::uint16_t registration_port, const std::string& alias, const std::string& id = "fake-connector");
  ~FakeConnector();

  /// The Attach session id the broker's Welcome named.
  const std::string& session() const { return session_; }

  /// A Registration.Lane with `first` as its first message (normally a
  /// LaneHello).
  std::unique_ptr<FakeLane> open(const tunnel::v1::LaneMessage& first);
  /// A lane for `session` (default: this connector's own).
  std::unique_ptr<FakeLane> lane(const std::string& session = {});
  /// Sends a config message on the Attach stream (as a connector relays
  /// what its policy service signed).
  bool send(const tunnel::v1::ConnectorMessage& m);

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<tunnel::v1::Registration::Stub> stub_;
  grpc::ClientContext attach_ctx_;
  std::unique_ptr<grpc::ClientReaderWriter<tunnel::v1::ConnectorMessage, tunnel::v1::BrokerMessage>> attach_;
  std::string session_;
  std::thread reader_, heartbeat_;
  std::mutex mu_;  // one writer on the Attach stream at a time
  std::condition_variable cv_;
  bool stop_ = false;
};

}  // namespace postern::testing
