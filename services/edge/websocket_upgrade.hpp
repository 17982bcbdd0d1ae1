#pragma once
// A WebSocket upgrade at the edge: the far side (the native service through
// the tunnel, or a DMZ-local one) answers first; the client gets its 101
// only after a 101 from there, else the refusal as the far side gave it.
// An open session is relayed, under the API's per-message policies, in a
// coroutine of its own until either side closes; then the exchange is
// recorded as any other (status 101).
//
// Single-threaded: the edge's executor.

#include <memory>

#include "common/net/ws_relay.hpp"
#include "common/policy/message_transformer.hpp"
#include "edge/request_handler.hpp"

namespace postern::edge {

class InFlight;
class WsUpstream;

class WebSocketUpgrade {
 public:
  struct Deps {
    asio::any_io_executor ex;
    const Settings& settings;
    Metrics& metrics;
    Upstreams& upstreams;
    policy::Enforcement& enforcement;
    policy::MessageTransformer& transforms;
    /// Open sessions, so that a drain can close them with 1001.
    net::WsSessions& sessions;
    InFlight& in_flight;
  };

  explicit WebSocketUpgrade(Deps deps) : d_(std::move(deps)) {}

  /// The upgrade `r` asks for (its head built, its policies admitted).
  /// Returns the status the client got, or 0 when the session opened: it
  /// then owns the client's stream (c.upgraded) and `r.policies`, and counts
  /// in flight until it ends.
  template <class Stream>
  asio::awaitable<unsigned> exchange(ClientConnection<Stream>& c, ClientRequest& r);

 private:
  struct Session;
  template <class Stream>
  asio::awaitable<unsigned> refused(ClientConnection<Stream>& c, const ClientRequest& r, const WsUpstream& far);
  template <class Stream>
  asio::awaitable<unsigned> accept(ClientConnection<Stream>& c, ClientRequest& r, std::unique_ptr<WsUpstream>& far,
                                   const net::WsStreamOptions& client_options);
  template <class WsStream>
  asio::awaitable<void> session(WsStream ws, std::unique_ptr<WsUpstream> far, Session s);

  Deps d_;
};

}  // namespace postern::edge
