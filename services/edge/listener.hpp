#pragma once
// The edge's external listeners: bound from its config, each accepting on a
// loop of its own, a TLS listener's certificate read again when its files
// change. And the connections that wait for a request, which a drain closes:
// a new one until its first request (its client chose this edge before the
// drain, so what it sends within a moment is still served), a kept-alive
// one between requests.
//
// Single-threaded: the edge's executor.

#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/event.hpp"
#include "postern/config/v1/config.pb.h"

namespace boost::asio::ssl {
class context;
}

namespace postern::edge {

class Listeners {
 public:
  /// Gets each accepted connection and its listener's TLS context (null:
  /// plain), at once.
  using Accepted = std::function<void(asio::ip::tcp::socket, std::shared_ptr<asio::ssl::context>)>;

  Listeners(asio::any_io_executor ex, Accepted accepted);
  ~Listeners();

  /// Binds every listener (throws std::runtime_error naming the field), then
  /// accepts on each, and checks the TLS files every `file_check_interval`
  /// until `*stop`.
  void start(const google::protobuf::RepeatedPtrField<config::v1::Listener>& listeners,
             std::chrono::seconds file_check_interval, const bool* stop);
  /// Starts the connections the kernel has completed but nobody accepted
  /// yet (closing a listener would reset them), then closes every listener.
  /// Returns how many connections were taken so.
  std::size_t close();

 private:
  struct Listener {
    std::unique_ptr<asio::ip::tcp::acceptor> acceptor;
    // Replaced when the files change; a connection keeps the one it began with.
    std::shared_ptr<asio::ssl::context> tls;
    std::string name;
    std::string cert_file, key_file;
  };
  static Listener bind(asio::any_io_executor ex, const config::v1::Listener& cfg, int i);
  asio::awaitable<void> accept_loop(Listener& l);
  std::size_t accept_backlog(Listener& l);
  bool reload_tls(Listener& l);

  asio::any_io_executor ex_;
  Accepted accepted_;
  std::vector<Listener> listeners_;
};

/// Connections waiting for a request, so that a drain can close them.
class WaitingConnections {
 public:
  explicit WaitingConnections(asio::any_io_executor ex);

  /// Counts one new connection as fresh (its first request not read yet)
  /// from its accept until done() or destruction.
  class Fresh {
   public:
    explicit Fresh(WaitingConnections& w) : w_(&w) {
      if (w_->fresh_++ == 0) w_->no_fresh_.reset();
    }
    Fresh(Fresh&& o) noexcept : w_(std::exchange(o.w_, nullptr)) {}
    Fresh& operator=(Fresh&&) = delete;
    ~Fresh() { done(); }
    void done() {
      if (w_ && --w_->fresh_ == 0) w_->no_fresh_.set();
      w_ = nullptr;
    }

   private:
    WaitingConnections* w_;
  };

  /// An id for a new connection.
  std::uint64_t next_id() { return next_id_++; }
  /// Connection `id` waits for a request (`first`: its first); `close` cuts
  /// the wait short.
  void waiting(std::uint64_t id, bool first, std::function<void()> close) {
    (first ? fresh_waiting_ : idle_waiting_)[id] = std::move(close);
  }
  void not_waiting(std::uint64_t id, bool first) { (first ? fresh_waiting_ : idle_waiting_).erase(id); }

  /// A drain: closes the connections idle between requests now; gives new
  /// ones `grace` for their first request, then closes those still silent.
  asio::awaitable<void> drain(std::chrono::steady_clock::duration grace);

 private:
  std::size_t fresh_ = 0;
  Event no_fresh_;  // set while fresh_ == 0
  std::map<std::uint64_t, std::function<void()>> fresh_waiting_, idle_waiting_;
  std::uint64_t next_id_ = 1;
};

}  // namespace postern::edge
