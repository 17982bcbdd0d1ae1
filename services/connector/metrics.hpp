#pragma once
// What a connector counts (one struct, made once per process; tests assert
// on these names).

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "common/observability/metric_children.hpp"

namespace postern::connector {

struct Metrics {
  prometheus::Gauge& brokers_attached;
  prometheus::Gauge& brokers_expected;
  prometheus::Counter& broker_lookups;
  prometheus::Gauge& lanes;
  prometheus::Gauge& in_flight;
  prometheus::Counter& reconnects;
  prometheus::Counter& refusals;
  prometheus::Family<prometheus::Counter>& requests;
  prometheus::Family<prometheus::Histogram>& duration;
  prometheus::Counter& bytes_in;
  prometheus::Counter& bytes_out;
  prometheus::Counter& credit_wait;
  prometheus::Gauge& config_version;
  prometheus::Family<prometheus::Counter>& config_updates;
  prometheus::Gauge& ws_sessions;
  prometheus::Family<prometheus::Histogram>& ws_duration;
  prometheus::Family<prometheus::Counter>& ws_messages;
  prometheus::Family<prometheus::Counter>& ws_bytes;
  prometheus::Histogram& frames_per_message;
  // Counted on every exchange: found by label values, not Family::Add.
  observability::MetricChildren<prometheus::Counter> requests_by{requests, {"alias", "code"}};
  observability::MetricChildren<prometheus::Histogram> duration_by{duration, {"alias"}};

  explicit Metrics(prometheus::Registry& r);
};

/// Session lengths: a second to a day.
inline const prometheus::Histogram::BucketBoundaries kSessionBuckets{1, 10, 60, 300, 900, 1800, 3600, 14400, 86400};

inline const prometheus::Histogram::BucketBoundaries kLatencyBuckets{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                                     0.25,  0.5,    1,     2.5,  5,     10,   30, 60};

}  // namespace postern::connector
