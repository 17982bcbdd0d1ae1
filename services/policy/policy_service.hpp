#pragma once
// The policy service: holds the current snapshot of the policy file, reloads
// it when the file changes (keeping the last good version when the new one is
// invalid) and streams every new version to connectors over Watch.

#include <boost/asio/io_context.hpp>
#include <memory>
#include <string>

#include "common/asio.hpp"
#include "postern/config/v1/config.pb.h"

namespace prometheus {
class Registry;
}

namespace postern::policy_service {

/// Single-threaded: everything runs on the io_context's thread, gRPC
/// completions are posted there by the pump.
class PolicyService {
 public:
  PolicyService(asio::io_context& ioc, config::v1::PolicyServiceConfig config,
                std::shared_ptr<prometheus::Registry> metrics);
  ~PolicyService();

  /// Loads the file (throws std::runtime_error listing every problem if it
  /// is invalid), starts the gRPC port and the reload loop.
  void start();
  /// Ends every Watch stream and shuts the gRPC port down.
  asio::awaitable<void> drain();

  int port() const;
  /// Read-only listings for the admin port. Never key material.
  std::string apis_json() const;
  std::string applications_json() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace postern::policy_service
