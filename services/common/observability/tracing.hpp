#pragma once
// Spans: each hop's part of an exchange, exported when tracing has an
// endpoint (observability/otlp_exporter.hpp) and the trace is sampled.
//
//   auto in = tracing::read_headers(head.headers());
//   tracing::Span span = tracing::Span::begin("broker", tracing::Kind::server, in);
//   tracing::write_traceparent(*head.mutable_headers(), span.traceparent(), !in.tracestate.empty());
//   ...
//   span.attr("http.response.status_code", 200).end();
//
// A span that is not recorded (no exporter, or not sampled) still has its
// ids, so logs carry trace_id and the next hop its parent; it costs two
// random ids and a few strings.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/observability/trace_context.hpp"

namespace postern::log {
struct ExchangeRecord;
}

namespace postern::tracing {

/// OTLP's SpanKind.
enum class Kind : int { internal = 1, server = 2, client = 3 };

struct Attribute {
  std::string key;
  std::string text;
  std::int64_t number = 0;
  bool is_number = false;
};

/// A finished span as it is exported.
struct SpanData {
  TraceId trace_id{};
  SpanId span_id{};
  SpanId parent_id{};  ///< all zero for a root span
  std::string name;
  Kind kind = Kind::internal;
  std::string tracestate;
  std::uint64_t start_unix_ns = 0;
  std::uint64_t end_unix_ns = 0;
  std::vector<Attribute> attributes;
  bool error = false;
  std::string status_message;
};

class Span {
 public:
  Span() = default;
  ~Span() { end(); }
  Span(Span&&) noexcept = default;
  Span& operator=(Span&& other) noexcept;
  Span(const Span&) = delete;
  Span& operator=(const Span&) = delete;

  /// This hop's span for a request that arrived with `in`: a child of its
  /// traceparent, or the root of a new trace (sampled at the configured
  /// ratio) when it had none that is valid.
  static Span begin(std::string_view name, Kind kind, const Incoming& in);
  /// A span within this one (the connector's call to the native service).
  Span child(std::string_view name, Kind kind) const;

  /// 32 hex digits; "" for a span that was never begun.
  const std::string& trace_id() const { return trace_hex_; }
  /// The traceparent that names this span as the parent.
  std::string traceparent() const;
  const std::string& tracestate() const { return state_; }
  /// Whether this span will be exported (attributes are kept only then).
  bool recording() const { return data_ != nullptr; }

  Span& attr(std::string_view key, std::string_view value);
  Span& attr(std::string_view key, const char* value) { return attr(key, std::string_view(value)); }
  Span& attr(std::string_view key, const std::string& value) { return attr(key, std::string_view(value)); }
  Span& attr(std::string_view key, std::int64_t value);
  Span& attr(std::string_view key, int value) { return attr(key, static_cast<std::int64_t>(value)); }
  Span& attr(std::string_view key, unsigned value) { return attr(key, static_cast<std::int64_t>(value)); }
  /// Names the span once what it did is known (the API, say).
  Span& rename(std::string_view name);
  /// Marks the span failed (OTLP status ERROR) with `message`.
  Span& fail(std::string_view message);
  /// Ends the span and hands it to the exporter; later calls do nothing.
  void end();

 private:
  TraceId trace_{};
  SpanId id_{};
  std::uint8_t flags_ = 0;
  std::string trace_hex_;
  std::string state_;
  std::unique_ptr<SpanData> data_;
  std::chrono::steady_clock::time_point started_{};
};

/// Ends a hop's span of an exchange with what its log record says (the
/// same facts on every hop): named "<method> <api>" ("relay <api or
/// alias>" where the hop knows no method, as the broker), attributes from the fields the
/// record has, failed on a 5xx or a result other than ok, client_gone or
/// client_error. Sets the record's trace_id.
void end_exchange(Span& span, log::ExchangeRecord& rec);

/// Ends a call to a native service with its answer's status (failed on a
/// 5xx).
void end_call(Span& call, unsigned status);

/// What a service exports under (the OTLP resource).
struct Resource {
  std::string service_name;  ///< service.name
  std::string instance_id;   ///< service.instance.id (the service's id)
  std::string version;       ///< service.version
};

/// The share of new traces sampled (0..1); 1 until set.
void set_sample_ratio(double ratio);

/// Where ended spans go: the exporter in force, if any. A sink must not
/// block (it queues); it is called on whatever thread ends a span.
class SpanSink {
 public:
  virtual ~SpanSink() = default;
  virtual void submit(std::unique_ptr<SpanData> span) = 0;
};
/// Installs `sink` (null: none) for spans begun from now on. The sink must
/// outlive every span begun while it was installed.
void set_sink(SpanSink* sink);
/// Uninstalls `sink` if it is the one installed.
void remove_sink(SpanSink* sink);

}  // namespace postern::tracing
