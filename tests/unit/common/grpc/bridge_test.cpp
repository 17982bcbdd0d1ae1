#include "common/grpc/bridge.hpp"

#include <grpcpp/create_channel.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/security/credentials.h>
#include <gtest/gtest.h>

#include <memory>

namespace postern::grpc_bridge {
namespace {

struct Call {
  grpc::ClientContext ctx;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> stream;
  grpc::Status status;
};

// A corked StartCall performs no operation and never delivers its tag: a
// tag that frees itself on completion would leak once per call. The leak
// is LeakSanitizer's to find (tests/run.sh runs the unit tests under it);
// nothing listens on the port, so every call ends cancelled.
TEST(StartDetached, CorkedCallsLeaveNothingBehind) {
  Pump pump(std::make_unique<grpc::CompletionQueue>(), "cq-test");
  auto channel = grpc::CreateChannel("127.0.0.1:1", grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  for (int i = 0; i < 3; ++i) {
    auto call = std::make_unique<Call>();
    call->ctx.set_initial_metadata_corked(true);
    call->stream = stub.PrepareCall(&call->ctx, "/postern.test.v1.Nothing/Call", pump.cq());
    start_detached(*call->stream);
    call->ctx.TryCancel();
    finish_detached(std::move(call));
  }
  // Delivers every tag still pending, then stops.
  pump.shutdown();
}

}  // namespace
}  // namespace postern::grpc_bridge
