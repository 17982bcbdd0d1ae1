#include "common/grpc/transform_client.hpp"

#include <grpcpp/grpcpp.h>

#include <map>

#include "common/config/yaml_proto.hpp"
#include "common/grpc/bridge.hpp"
#include "common/grpc/channel.hpp"
#include "postern/transform/v1/transform.grpc.pb.h"

namespace postern::grpc_bridge {

namespace xv1 = transform::v1;
using namespace std::chrono_literals;

struct TransformClient::Impl {
  asio::any_io_executor ex;
  std::unique_ptr<Pump> pump;
  std::map<std::string, std::unique_ptr<xv1::MessageTransform::Stub>> stubs;

  xv1::MessageTransform::Stub& stub(const std::string& address) {
    auto& s = stubs[address];
    if (!s) {
      grpc::ChannelArguments args = client_channel_args();
      args.SetMaxReceiveMessageSize(64 << 20);
      s = xv1::MessageTransform::NewStub(grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
    }
    return *s;
  }
};

TransformClient::TransformClient(asio::any_io_executor ex) : impl_(std::make_unique<Impl>()) { impl_->ex = ex; }
TransformClient::~TransformClient() = default;

asio::awaitable<TransformClient::Result> TransformClient::transform(const policy::v1::TransformService& svc,
                                                                    std::string_view api, std::string_view request_id,
                                                                    std::string_view application,
                                                                    net::WsDirection dir, net::WsMessage& m) {
  auto& im = *impl_;
  // Its thread starts with the first API that names a service.
  if (!im.pump) im.pump = std::make_unique<Pump>(std::make_unique<grpc::CompletionQueue>(), "cq-transform");
  xv1::TransformRequest req;
  req.set_api(std::string(api));
  req.set_request_id(std::string(request_id));
  req.set_application(std::string(application));
  req.set_direction(dir == net::WsDirection::client_to_server ? xv1::DIRECTION_CLIENT_TO_SERVER
                                                               : xv1::DIRECTION_SERVER_TO_CLIENT);
  req.set_binary(m.binary());
  req.set_data(m.data);
  const auto timeout = config::duration_or(svc.timeout(), 1000ms);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + timeout);
  auto rpc = im.stub(svc.address()).PrepareAsyncTransform(&ctx, req, im.pump->cq());
  rpc->StartCall();
  xv1::TransformResponse resp;
  grpc::Status st;
  co_await op([&](void* tag) { rpc->Finish(&resp, &st, tag); });
  Result r;
  if (!st.ok()) {
    r.error = st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED
                  ? "no answer within " + std::to_string(timeout.count()) + " ms"
                  : std::to_string(static_cast<int>(st.error_code())) + " " + st.error_message();
    co_return r;
  }
  r.ok = true;
  r.drop = resp.drop();
  m.kind = resp.binary() ? net::WsMessage::Kind::binary : net::WsMessage::Kind::text;
  m.data = std::move(*resp.mutable_data());
  co_return r;
}

}  // namespace postern::grpc_bridge
