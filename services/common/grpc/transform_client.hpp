#pragma once
// The gRPC client for users' message transform services
// (postern.transform.v1): the MessageTransformer the edge and the connector
// give their WebSocket policies. Light header: the gRPC types stay in the
// .cpp.
//
// Single-threaded: use on the executor it was made with.

#include <memory>

#include "common/policy/message_transformer.hpp"

namespace postern::grpc_bridge {

/// One channel per address, kept for the life of the process. The gRPC
/// queue's thread starts with the first call.
class TransformClient final : public policy::MessageTransformer {
 public:
  explicit TransformClient(asio::any_io_executor ex);
  ~TransformClient() override;

  asio::awaitable<Result> transform(const policy::v1::TransformService& svc, std::string_view api,
                                    std::string_view request_id, std::string_view application, net::WsDirection dir,
                                    net::WsMessage& m) override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace postern::grpc_bridge
