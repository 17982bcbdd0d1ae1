#pragma once
// The demo's message transform service (postern.transform.v1), the example
// of a user's "Invoke IS" service for WebSocket APIs:
//   client -> server text: "[to-server] " prepended;
//   server -> client text: " [to-client]" appended;
//   binary messages: bytes reversed;
//   the text "drop me": dropped;
//   a text containing "slow": answered after 3 s (past a 1 s timeout).

#include <memory>
#include <string>

namespace postern::demo {

class TransformServer {
 public:
  /// Serves on `address` (host:port; port 0 picks one). Throws
  /// std::runtime_error if it cannot listen.
  explicit TransformServer(const std::string& address);
  ~TransformServer();
  int port() const { return port_; }
  void shutdown();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
};

}  // namespace postern::demo
