#pragma once
// What the edge counts (one struct, made once per process; tests assert on
// these names), and the end of every exchange: request metrics, policy
// decisions, the request log line.

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <chrono>
#include <string>
#include <string_view>

#include "common/observability/metric_children.hpp"
#include "common/policy/engine.hpp"

namespace postern::policy {
class Enforcement;
}

namespace postern::tracing {
class Span;
}

namespace postern::edge {

struct Metrics {
  prometheus::Family<prometheus::Counter>& requests;
  prometheus::Family<prometheus::Histogram>& duration;
  prometheus::Counter& bytes_in;
  prometheus::Counter& bytes_out;
  prometheus::Gauge& connections;
  prometheus::Gauge& in_flight;
  prometheus::Gauge& ws_sessions;
  prometheus::Family<prometheus::Counter>& ws_sessions_total;
  prometheus::Family<prometheus::Histogram>& ws_duration;
  prometheus::Family<prometheus::Counter>& ws_messages;
  prometheus::Family<prometheus::Counter>& ws_bytes;
  // Counted on every exchange: found by label values, not Family::Add.
  observability::MetricChildren<prometheus::Counter> requests_by{requests, {"api", "code"}};
  observability::MetricChildren<prometheus::Histogram> duration_by{duration, {"api"}};

  explicit Metrics(prometheus::Registry& r);
};

inline const prometheus::Histogram::BucketBoundaries kLatencyBuckets{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                                     0.25,  0.5,    1,     2.5,  5,     10,   30, 60};

/// Session lengths: a second to a day.
inline const prometheus::Histogram::BucketBoundaries kSessionBuckets{1, 10, 60, 300, 900, 1800, 3600, 14400, 86400};

/// One finished exchange as the request log line and the request metrics
/// name it.
struct ExchangeSummary {
  std::chrono::steady_clock::time_point started;
  unsigned status = 0;
  std::string_view api, request_id, client_ip, method, path, application;
  /// A WebSocket session that ran (its 101): counted as a session, not as
  /// a request.
  bool websocket_session = false;
  /// The edge's span of the exchange: ended here, its trace_id logged.
  tracing::Span* span = nullptr;
};

/// The end of an exchange: requests (`code`: the exact status) and
/// duration by API, or a WebSocket session's duration; its policy decisions
/// (counted by `enforcement`); the log line.
void exchange_done(Metrics& metrics, policy::Enforcement& enforcement, const ExchangeSummary& s,
                   const policy::Decisions& decisions);

}  // namespace postern::edge
