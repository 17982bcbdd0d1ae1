#pragma once
// The admin port every service has: /healthz, /readyz, /metrics.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "common/asio.hpp"

namespace prometheus {
class Registry;
}

namespace postern::observability {

/// Serves the admin endpoints on the service's executor. start() binds and
/// logs "listening" (listener=admin); stop() closes the acceptor.
class AdminServer {
 public:
  AdminServer(asio::any_io_executor ex, std::shared_ptr<prometheus::Registry> registry);
  ~AdminServer();

  /// Throws std::runtime_error naming the address if it cannot bind.
  void start(const std::string& listen);
  void stop();
  std::uint16_t port() const { return port_; }

  /// Serves GET `path` with the JSON `body()` returns (called on the
  /// executor, per request). Register before start().
  void add_json(const std::string& path, std::function<std::string()> body);
  /// Serves GET `path` as an HTML page titled `title` for a browser, and
  /// as the JSON `json()` returns to a client whose Accept asks for
  /// application/json (status_page.hpp). Register before start().
  void add_page(const std::string& path, std::string title, std::function<std::string()> json);

  /// /readyz answers 200 only while ready.
  void set_ready(bool ready) { ready_ = ready; }
  bool ready() const { return ready_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::uint16_t port_ = 0;
  std::atomic<bool> ready_{false};
};

}  // namespace postern::observability
