#pragma once
// The policies of a WebSocket API: at the upgrade (Origin allow-list; the
// identify and throttling policies are the REST ones), and per message
// (built-in edits, the user's transform service through a
// MessageTransformer, Log Invocation records for the session and its
// messages). Run where the API's policies run: the edge
// (DMZ enforcement) or the connector (green).
//
// Single-threaded: call from the service's executor.

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "common/net/ws_relay.hpp"
#include "common/policy/catalog.hpp"
#include "common/policy/engine.hpp"
#include "common/policy/message_transformer.hpp"

namespace prometheus {
class Counter;
}

namespace postern::policy {

class InvocationLog;

/// Origin allow-list (policies.websocket.allowed_origins): 403 for an
/// Origin outside it, or none at all when a list is set.
Verdict check_origin(const CompiledApi& api, std::string_view origin, Decisions& decisions);

/// True if `text` is one JSON value.
bool valid_json(std::string_view text);

/// A built-in edit applied to one message (prepend/append for any message;
/// JSON set/remove for text messages holding a JSON object).
void apply_edit(const pv1::MessageEdit& edit, net::WsMessage& m);

/// Who and what a session is, for its records.
struct WsSessionInfo {
  std::string request_id, api, application, client_ip, path, subprotocol;
  std::string enforced_by;  ///< "edge" or "connector"
  std::string trace_id;
};

/// The per-message policies of one session, plugged into the relay.
class WsSessionPolicies final : public net::WsHooks {
 public:
  /// `pol` null: nothing but counting. `transforms` is used only when the
  /// policies name a service.
  WsSessionPolicies(const pv1::Policies* pol, WsSessionInfo info, InvocationLog& log, MessageTransformer* transforms);

  asio::awaitable<bool> on_message(net::WsDirection dir, net::WsMessage& m) override;
  std::string_view request_id() const override { return info_.request_id; }
  std::string_view trace_id() const override { return info_.trace_id; }

  /// Log Invocation's open record (at the 101).
  void opened();
  /// The close record: counts, bytes, close codes, who closed, duration.
  void closed(const net::WsRelayStats& stats, const Decisions& decisions);

  /// Relay options from policies.websocket (idle timeout default 10 min);
  /// message bytes passed on are counted live in `to_server` and `to_client`.
  static net::WsRelayOptions relay_options(const pv1::Policies* pol, prometheus::Counter& to_server,
                                           prometheus::Counter& to_client);
  /// Keep-alive ping interval from policies.websocket (default 30 s).
  static std::chrono::milliseconds ping_interval(const pv1::Policies* pol);

  const WsSessionInfo& info() const { return info_; }

 private:
  const pv1::Policies* pol_;
  WsSessionInfo info_;
  InvocationLog& log_;
  MessageTransformer* transforms_;
  std::chrono::steady_clock::time_point started_;
  std::uint64_t transformed_[2] = {0, 0}, dropped_[2] = {0, 0}, transform_failures_ = 0;
};

}  // namespace postern::policy
