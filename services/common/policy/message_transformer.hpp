#pragma once
// What the per-message policies of a WebSocket API call when they name a
// transform service (policies.message_transformation.service): one message
// in, its replacement (or "drop it") out. The policy engine knows only this
// interface; the network client behind it lives outside common/policy/
// (transform_client.hpp).
//
// Single-threaded: call from the service's executor.

#include <string>
#include <string_view>

#include "common/asio.hpp"
#include "common/net/ws_relay.hpp"
#include "postern/policy/v1/policy.pb.h"

namespace postern::policy {

class MessageTransformer {
 public:
  virtual ~MessageTransformer() = default;

  struct Result {
    bool ok = false;  ///< false: timeout or error (`error` says which)
    bool drop = false;
    std::string error;
  };

  /// Replaces `m` with the service's answer; leaves it as it was when the
  /// call fails.
  virtual asio::awaitable<Result> transform(const v1::TransformService& svc, std::string_view api,
                                            std::string_view request_id, std::string_view application,
                                            net::WsDirection dir, net::WsMessage& m) = 0;
};

}  // namespace postern::policy
