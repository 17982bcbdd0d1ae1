#include "demo/transform_service.hpp"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <stdexcept>
#include <thread>

#include "postern/transform/v1/transform.grpc.pb.h"

namespace postern::demo {

namespace xv1 = transform::v1;

namespace {

class Service final : public xv1::MessageTransform::Service {
  grpc::Status Transform(grpc::ServerContext*, const xv1::TransformRequest* req,
                         xv1::TransformResponse* res) override {
    res->set_binary(req->binary());
    std::string data = req->data();
    if (req->binary()) {
      std::reverse(data.begin(), data.end());
    } else if (data == "drop me") {
      res->set_drop(true);
      return grpc::Status::OK;
    } else {
      if (data.find("slow") != std::string::npos) std::this_thread::sleep_for(std::chrono::seconds(3));
      if (req->direction() == xv1::DIRECTION_CLIENT_TO_SERVER) {
        data.insert(0, "[to-server] ");
      } else {
        data += " [to-client]";
      }
    }
    res->set_data(std::move(data));
    return grpc::Status::OK;
  }
};

}  // namespace

struct TransformServer::Impl {
  Service service;
  std::unique_ptr<grpc::Server> server;
};

TransformServer::TransformServer(const std::string& address) : impl_(std::make_unique<Impl>()) {
  grpc::ServerBuilder b;
  b.AddListeningPort(address, grpc::InsecureServerCredentials(), &port_);
  b.RegisterService(&impl_->service);
  b.SetMaxReceiveMessageSize(64 << 20);
  impl_->server = b.BuildAndStart();
  if (!impl_->server || port_ == 0) throw std::runtime_error("transform service: cannot listen on " + address);
}

TransformServer::~TransformServer() { shutdown(); }

void TransformServer::shutdown() {
  if (impl_->server) {
    impl_->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    impl_->server.reset();
  }
}

}  // namespace postern::demo
