#pragma once
// A connector written with the generated tunnel stubs, for tests that break
// the protocol or try what a hostile connector would: it attaches like the
// real one (Hello, heartbeats) and then does what the test tells it.
// Blocking calls on gRPC's sync API; one test thread uses it.

#include <grpcpp/grpcpp.h>

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "postern/tunnel/v1/tunnel.grpc.pb.h"

namespace postern::testing {

class FakeConnector {
 public:
  using FrameStream = grpc::ClientReaderWriter<tunnel::v1::Frame, tunnel::v1::Frame>;
  struct Pull {
    grpc::ClientContext ctx;
    std::unique_ptr<FrameStream> stream;
  };

  /// Attaches to the registration port as `id`, presenting `cert`/`key`
  /// (PEM files) and asking for `alias`. Throws std::runtime_error when the
  /// broker does not welcome it.
  FakeConnector(const std::string& ca, const std::string& cert, const std::string& key,
                std::uint16_t registration_port, const std::string& alias, const std::string& id = "fake-connector");
  ~FakeConnector();

  /// The Attach session id the broker's Welcome named.
  const std::string& session() const { return session_; }

  /// A Pull stream with `first` as its first frame (normally Park).
  std::unique_ptr<Pull> open(const tunnel::v1::Frame& first);
  /// A Pull stream parked for `session` (default: this connector's own).
  std::unique_ptr<Pull> park(const std::string& session = {});
  /// A Registration.Sessions stream for `session` (default: its own).
  std::unique_ptr<Pull> sessions(const std::string& session = {});
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
