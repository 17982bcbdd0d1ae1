#pragma once
// W3C Trace Context (https://www.w3.org/TR/trace-context/): the
// `traceparent` a request carries, parsed strictly, and the one each hop
// sends on naming its own span as the parent.
//
// Every hop (edge, broker, connector) takes the traceparent of the head it
// received, begins its span as a child of it (a new trace when there is none
// or it is not valid) and replaces the header with one that names its own
// span, so the native service sees the connector's call as its parent.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/exchange.hpp"

namespace postern::tracing {

using Headers = google::protobuf::RepeatedPtrField<tunnel::v1::Header>;
using TraceId = std::array<std::uint8_t, 16>;
using SpanId = std::array<std::uint8_t, 8>;

struct TraceContext {
  TraceId trace_id{};
  SpanId span_id{};  ///< the parent's span, as received
  std::uint8_t flags = 0;
  bool sampled() const { return (flags & 1u) != 0; }
};

/// A traceparent value as W3C Trace Context level 1 defines it: version 00
/// is exactly `00-<32 hex>-<16 hex>-<2 hex>`, lower-case, ids not all zero;
/// a later version (not ff) is read by its first four fields. Anything else
/// is nullopt.
std::optional<TraceContext> parse_traceparent(std::string_view value);

/// `00-<trace>-<span>-<flags>`.
std::string format_traceparent(const TraceId& trace, const SpanId& span, std::uint8_t flags);

/// Lower-case hex of an id.
std::string to_hex(const std::uint8_t* bytes, std::size_t n);
template <std::size_t N>
std::string to_hex(const std::array<std::uint8_t, N>& id) {
  return to_hex(id.data(), N);
}

/// Fresh random ids (never all zero). Not for secrets: a fast generator
/// seeded from the system's entropy, one per thread.
TraceId new_trace_id();
SpanId new_span_id();

/// What a request's headers say of its trace: the context of its single
/// valid `traceparent` (two or more, or an invalid one, count as none), and
/// its `tracestate` (joined; "" when the traceparent is not valid, as the
/// specification asks, or when it is over 512 bytes).
struct Incoming {
  std::optional<TraceContext> parent;
  std::string tracestate;
};
Incoming read_headers(const Headers& headers);
/// The same from what a header parser found: how many traceparent fields,
/// the value of the last, and the tracestate fields joined with ','.
Incoming incoming(int traceparents, std::string_view traceparent, std::string tracestate);

/// The trace id (32 hex digits) of the first traceparent in `headers`, ""
/// if there is none: for log records of an exchange already under way.
std::string_view trace_id_in(const Headers& headers);

/// Removes every `traceparent` from `headers` and appends `value` as the
/// one traceparent; removes `tracestate` too when `keep_state` is false.
void write_traceparent(Headers& headers, const std::string& value, bool keep_state);

}  // namespace postern::tracing
