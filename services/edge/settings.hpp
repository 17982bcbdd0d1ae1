#pragma once
// The edge's timeouts and limits, read once from its config with their
// defaults filled in.

#include <chrono>
#include <cstddef>
#include <cstdint>

#include "common/config/yaml_proto.hpp"
#include "postern/config/v1/config.pb.h"

namespace postern::edge {

struct Settings {
  using Duration = std::chrono::steady_clock::duration;
  Duration upstream_timeout;  ///< for a response head, unless the API sets its own
  Duration idle_timeout;      ///< between reads and writes of a request, and between requests
  Duration header_timeout;    ///< for a new connection's first request head (and TLS handshake)
  Duration drain_timeout;
  std::uint32_t max_header_bytes = 65536;
  std::size_t max_ws_message_bytes = 16u << 20;

  static Settings from(const config::v1::EdgeConfig& cfg) {
    using namespace std::chrono_literals;
    Settings s;
    s.upstream_timeout = config::duration_or(cfg.upstream_timeout(), 60s);
    s.idle_timeout = config::duration_or(cfg.idle_timeout(), 60s);
    s.header_timeout = config::duration_or(cfg.header_timeout(), 10s);
    s.drain_timeout = config::duration_or(cfg.drain_timeout(), 20s);
    if (cfg.max_header_bytes()) s.max_header_bytes = cfg.max_header_bytes();
    if (cfg.max_ws_message_bytes()) s.max_ws_message_bytes = cfg.max_ws_message_bytes();
    return s;
  }
};

}  // namespace postern::edge
