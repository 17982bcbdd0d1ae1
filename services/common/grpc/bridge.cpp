#include "common/grpc/bridge.hpp"

#include <pthread.h>

namespace postern::grpc_bridge {

Pump::Pump(std::unique_ptr<grpc::CompletionQueue> cq, std::string name) : cq_(std::move(cq)) {
  thread_ = std::thread([q = cq_.get(), name = std::move(name)] {
    pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
    void* tag = nullptr;
    bool ok = false;
    while (q->Next(&tag, &ok)) static_cast<Tag*>(tag)->complete(ok);
  });
}

Pump::~Pump() { shutdown(); }

void Pump::shutdown() {
  if (shut_) return;
  shut_ = true;
  cq_->Shutdown();
  if (thread_.joinable()) thread_.join();
}

}  // namespace postern::grpc_bridge
