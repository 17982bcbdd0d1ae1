#pragma once
// A WebSocket session relayed one hop: messages move both ways between two
// ports (the client's side and the server's side) until both have closed.
//
// A port is whatever carries messages on that side: a Beast WebSocket stream
// (the client at the edge, the native service at the connector) or a tunnel
// gRPC stream (edge <-> broker <-> connector). The relay applies per-message
// hooks (transforms, logging), the idle timeout and the maximum lifetime,
// passes close codes on (1005/1006/1015, which never go on the wire, become
// 1011) and bounds the closing handshake.
//
// Single-threaded: everything runs on the executor given to the relay. Light
// header: no Beast, no gRPC.

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "common/asio.hpp"

namespace postern::net {

struct WsMessage {
  enum class Kind : std::uint8_t { text, binary, close };
  Kind kind = Kind::text;
  /// The payload; for a close, the reason.
  std::string data;
  /// Close only: the code as received (1005 none given, 1006 the hop broke,
  /// 1009 too big, ...).
  std::uint16_t code = 0;

  bool is_close() const { return kind == Kind::close; }
  bool binary() const { return kind == Kind::binary; }
  static WsMessage close(std::uint16_t code, std::string reason) {
    WsMessage m;
    m.kind = Kind::close;
    m.code = code;
    m.data = std::move(reason);
    return m;
  }
};

/// Close codes that may not be sent (1005, 1006, 1015, and anything outside
/// 1000-4999 or reserved) become 1011; the rest pass unchanged.
std::uint16_t forwardable_close_code(std::uint16_t code);

/// At most 123 bytes (the limit for a close frame's reason), cut on a UTF-8
/// boundary.
std::string close_reason(std::string_view reason);

/// One side of a relayed session. Calls come from one executor; at most one
/// read() and one write() at a time (the relay serialises writes).
class WsPort {
 public:
  virtual ~WsPort() = default;
  /// The next message. A close when the peer closed (its code) or the hop
  /// failed (1006, or 1009 when the peer sent a message over the limit).
  /// Never throws; not called again after a close.
  virtual asio::awaitable<void> read(WsMessage& m) = 0;
  /// Sends a message on. A close starts the closing handshake (or is a no-op
  /// when this side has closed already). Returns false if the hop is gone.
  virtual asio::awaitable<bool> write(const WsMessage& m) = 0;
  /// Ends the hop now: a pending read completes with a 1006 close.
  virtual void abort() = 0;
};

/// Settings of a Beast WebSocket hop (client, native service).
struct WsStreamOptions {
  /// Larger messages are refused with close 1009.
  std::size_t max_message_bytes = 16u << 20;
  /// A ping after this long without traffic; the hop is dropped when a
  /// second interval passes without an answer.
  std::chrono::milliseconds ping_interval{std::chrono::seconds(30)};
  std::chrono::milliseconds handshake_timeout{std::chrono::seconds(10)};
};

enum class WsDirection { client_to_server, server_to_client };

/// Thrown by a hook to end the session: both sides get this close.
struct WsStop {
  std::uint16_t code;
  std::string reason;
};

/// Per-message policies. on_message may change the message; returning false
/// drops it; throwing WsStop ends the session.
class WsHooks {
 public:
  virtual ~WsHooks() = default;
  virtual asio::awaitable<bool> on_message(WsDirection dir, WsMessage& m) = 0;
  /// The session's request and trace ids, for the relay's own log records.
  virtual std::string_view request_id() const { return {}; }
  virtual std::string_view trace_id() const { return {}; }
};

struct WsRelayOptions {
  /// No message either way for this long: both sides closed with 1001.
  std::chrono::milliseconds idle_timeout{std::chrono::minutes(10)};
  /// 0: none. Older sessions are closed with 1001.
  std::chrono::milliseconds max_lifetime{0};
  /// Time allowed for the rest of the closing handshake once one side closed.
  std::chrono::milliseconds close_timeout{std::chrono::seconds(5)};
  /// Called with a data message's size once the far side took it (live
  /// byte counters).
  std::function<void(WsDirection, std::size_t)> on_sent;
};

/// What happened, for logs, metrics and the invocation record.
struct WsRelayStats {
  std::uint64_t messages[2] = {0, 0};  ///< indexed by WsDirection
  std::uint64_t bytes[2] = {0, 0};
  /// The close each side sent us (0: none, the hop was cut).
  std::uint16_t client_close_code = 0, server_close_code = 0;
  std::string client_close_reason, server_close_reason;
  /// "client", "server" or "gateway" (idle timeout, lifetime, drain, policy).
  std::string closed_by;
  /// The gateway's own close, when closed_by == "gateway".
  std::uint16_t gateway_close_code = 0;
  std::string gateway_close_reason;
};

class WsRelay {
 public:
  WsRelay(asio::any_io_executor ex, WsPort& client, WsPort& server, WsHooks* hooks, WsRelayOptions options);
  ~WsRelay();
  WsRelay(const WsRelay&) = delete;
  WsRelay& operator=(const WsRelay&) = delete;

  /// Moves messages until both directions have ended.
  asio::awaitable<void> run();
  /// Closes both sides with `code` (e.g. 1001 when draining). Idempotent.
  void stop(std::uint16_t code, std::string reason);
  const WsRelayStats& stats() const { return stats_; }

 private:
  struct State;
  std::shared_ptr<State> state_;
  WsRelayStats& stats_;
};

/// The open sessions of one service, so that a drain can close them all.
/// Single-threaded, on the service's executor.
class WsSessions {
 public:
  /// Runs `relay` to its end. A session that starts after stop_all() is
  /// closed at once with the same code.
  asio::awaitable<void> run(WsRelay& relay);
  /// Closes every open session (and every later one) with `code`.
  void stop_all(std::uint16_t code, std::string reason);

 private:
  std::map<std::uint64_t, WsRelay*> open_;
  std::uint64_t next_ = 1;
  std::optional<std::pair<std::uint16_t, std::string>> stopping_;
};

}  // namespace postern::net
