#pragma once
// Span export over OTLP/HTTP with JSON bodies (the OpenTelemetry protocol's
// plain-HTTP form): ended spans are queued, and a thread of the exporter's
// own posts them to the collector in batches. Bounded both ways: a full
// queue drops new spans, an export that fails or times out drops its batch;
// both are counted (postern_trace_spans_dropped_total{reason}), and a
// request never waits for either.

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/observability/tracing.hpp"

namespace prometheus {
class Registry;
}
namespace postern::config::v1 {
class TracingConfig;
}

namespace postern::tracing {

struct ExporterOptions {
  /// http(s)://host:port[/path]; no path means /v1/traces.
  std::string endpoint;
  std::string ca_file;
  std::size_t max_queued = 2048;
  std::size_t max_batch = 512;
  std::chrono::milliseconds flush_interval{1000};
  std::chrono::milliseconds timeout{5000};
};

/// The ExportTraceServiceRequest for `spans`, as OTLP's JSON encoding writes
/// it (ids in hex, 64-bit numbers as strings).
std::string encode_otlp_json(const Resource& resource, const std::vector<std::unique_ptr<SpanData>>& spans);

class OtlpExporter final : public SpanSink {
 public:
  /// Starts the export thread. Throws std::invalid_argument naming a bad
  /// endpoint URL.
  OtlpExporter(ExporterOptions options, Resource resource, prometheus::Registry& registry);
  ~OtlpExporter() override;
  OtlpExporter(const OtlpExporter&) = delete;
  OtlpExporter& operator=(const OtlpExporter&) = delete;

  /// Queues a span (thread-safe, never blocks).
  void submit(std::unique_ptr<SpanData> span) override;
  /// Sends what is queued, for at most `deadline`, then stops the thread.
  void stop(std::chrono::milliseconds deadline);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// A service's tracing from its config: the sample ratio, and with an
/// endpoint an exporter, installed as the span sink (set_sink). Returns the
/// exporter (null without an endpoint); stop it before exit to send what is
/// queued. Throws std::invalid_argument naming a bad endpoint.
std::unique_ptr<OtlpExporter> start_tracing(const config::v1::TracingConfig& config, std::string_view service,
                                            std::string_view instance_id, prometheus::Registry& registry);

}  // namespace postern::tracing
