#include "common/observability/trace_context.hpp"

#include <algorithm>
#include <random>

#include "common/net/http_headers.hpp"

namespace postern::tracing {
namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;  // upper case is not allowed either
}

// Reads 2 * n lower-case hex digits into `out`; false on anything else.
bool read_hex(std::string_view text, std::uint8_t* out, std::size_t n) {
  if (text.size() != 2 * n) return false;
  for (std::size_t i = 0; i < n; ++i) {
    const int hi = hex_value(text[2 * i]);
    const int lo = hex_value(text[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<std::uint8_t>(hi << 4 | lo);
  }
  return true;
}

template <std::size_t N>
bool all_zero(const std::array<std::uint8_t, N>& id) {
  return std::all_of(id.begin(), id.end(), [](std::uint8_t b) { return b == 0; });
}

std::mt19937_64& generator() {
  thread_local std::mt19937_64 g([] {
    std::random_device rd;
    return (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  }());
  return g;
}

template <std::size_t N>
std::array<std::uint8_t, N> random_id() {
  std::array<std::uint8_t, N> id{};
  do {
    for (std::size_t i = 0; i < N; i += 8) {
      const std::uint64_t v = generator()();
      for (std::size_t j = 0; j < 8 && i + j < N; ++j) id[i + j] = static_cast<std::uint8_t>(v >> (8 * j));
    }
  } while (all_zero(id));
  return id;
}

constexpr std::size_t kMaxTracestate = 512;

}  // namespace

std::optional<TraceContext> parse_traceparent(std::string_view v) {
  // version "-" trace-id "-" parent-id "-" trace-flags: 2+1+32+1+16+1+2.
  constexpr std::size_t kLength = 55;
  if (v.size() < kLength) return std::nullopt;
  std::uint8_t version = 0;
  if (!read_hex(v.substr(0, 2), &version, 1) || version == 0xff) return std::nullopt;
  // Version 00 is exactly 55 characters; a later one may add fields after a dash.
  if (version == 0 ? v.size() != kLength : (v.size() > kLength && v[kLength] != '-')) return std::nullopt;
  if (v[2] != '-' || v[35] != '-' || v[52] != '-') return std::nullopt;
  TraceContext c;
  if (!read_hex(v.substr(3, 32), c.trace_id.data(), 16) || !read_hex(v.substr(36, 16), c.span_id.data(), 8) ||
      !read_hex(v.substr(53, 2), &c.flags, 1)) {
    return std::nullopt;
  }
  if (all_zero(c.trace_id) || all_zero(c.span_id)) return std::nullopt;
  return c;
}

std::string to_hex(const std::uint8_t* bytes, std::size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(2 * n, '0');
  for (std::size_t i = 0; i < n; ++i) {
    out[2 * i] = kDigits[bytes[i] >> 4];
    out[2 * i + 1] = kDigits[bytes[i] & 0xf];
  }
  return out;
}

std::string format_traceparent(const TraceId& trace, const SpanId& span, std::uint8_t flags) {
  std::string out;
  out.reserve(55);
  out += "00-";
  out += to_hex(trace);
  out += '-';
  out += to_hex(span);
  out += '-';
  out += to_hex(&flags, 1);
  return out;
}

TraceId new_trace_id() { return random_id<16>(); }
SpanId new_span_id() { return random_id<8>(); }

Incoming read_headers(const Headers& headers) {
  Incoming in;
  int parents = 0;
  std::string_view parent;
  for (const auto& h : headers) {
    if (net::iequals(h.name(), "traceparent")) {
      ++parents;
      parent = h.value();
    } else if (net::iequals(h.name(), "tracestate")) {
      if (!in.tracestate.empty()) in.tracestate += ',';
      in.tracestate += h.value();
    }
  }
  return incoming(parents, parent, std::move(in.tracestate));
}

Incoming incoming(int traceparents, std::string_view traceparent, std::string tracestate) {
  Incoming in;
  if (traceparents == 1) in.parent = parse_traceparent(traceparent);
  if (in.parent && tracestate.size() <= kMaxTracestate) in.tracestate = std::move(tracestate);
  return in;
}

std::string_view trace_id_in(const Headers& headers) {
  for (const auto& h : headers) {
    if (net::iequals(h.name(), "traceparent")) {
      const std::string_view v = h.value();
      return v.size() >= 35 ? v.substr(3, 32) : std::string_view();
    }
  }
  return {};
}

void write_traceparent(Headers& headers, const std::string& value, bool keep_state) {
  bool written = false;
  for (int i = 0; i < headers.size();) {
    auto* h = headers.Mutable(i);
    const bool parent = net::iequals(h->name(), "traceparent");
    if (parent && !written) {
      h->set_value(value);
      written = true;
      ++i;
    } else if (parent || (!keep_state && net::iequals(h->name(), "tracestate"))) {
      headers.DeleteSubrange(i, 1);
    } else {
      ++i;
    }
  }
  if (!written) {
    auto* h = headers.Add();
    h->set_name("traceparent");
    h->set_value(value);
  }
}

}  // namespace postern::tracing
