#include "common/observability/tracing.hpp"

#include <atomic>
#include <random>

#include "common/observability/log.hpp"

namespace postern::tracing {
namespace {

std::atomic<double> g_ratio{1.0};
std::atomic<SpanSink*> g_sink{nullptr};

std::uint64_t unix_ns_now() {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count());
}

bool sample_new_trace() {
  const double ratio = g_ratio.load(std::memory_order_relaxed);
  if (ratio >= 1.0) return true;
  if (ratio <= 0.0) return false;
  thread_local std::mt19937 g{std::random_device{}()};
  return std::uniform_real_distribution<double>(0.0, 1.0)(g) < ratio;
}

}  // namespace

void set_sample_ratio(double ratio) { g_ratio.store(ratio, std::memory_order_relaxed); }
void set_sink(SpanSink* sink) { g_sink.store(sink, std::memory_order_release); }
void remove_sink(SpanSink* sink) { g_sink.compare_exchange_strong(sink, nullptr, std::memory_order_acq_rel); }

Span& Span::operator=(Span&& other) noexcept {
  if (this != &other) {
    end();
    trace_ = other.trace_;
    id_ = other.id_;
    flags_ = other.flags_;
    trace_hex_ = std::move(other.trace_hex_);
    state_ = std::move(other.state_);
    data_ = std::move(other.data_);
    started_ = other.started_;
  }
  return *this;
}

Span Span::begin(std::string_view name, Kind kind, const Incoming& in) {
  Span s;
  s.started_ = std::chrono::steady_clock::now();
  s.id_ = new_span_id();
  SpanId parent{};
  if (in.parent) {
    s.trace_ = in.parent->trace_id;
    parent = in.parent->span_id;
    s.flags_ = in.parent->flags;
    s.state_ = in.tracestate;
  } else {
    s.trace_ = new_trace_id();
    s.flags_ = sample_new_trace() ? 1 : 0;
  }
  s.trace_hex_ = to_hex(s.trace_);
  if ((s.flags_ & 1u) && g_sink.load(std::memory_order_acquire)) {
    s.data_ = std::make_unique<SpanData>();
    s.data_->trace_id = s.trace_;
    s.data_->span_id = s.id_;
    s.data_->parent_id = parent;
    s.data_->name = std::string(name);
    s.data_->kind = kind;
    s.data_->tracestate = s.state_;
    s.data_->start_unix_ns = unix_ns_now();
  }
  return s;
}

Span Span::child(std::string_view name, Kind kind) const {
  Incoming in;
  if (!trace_hex_.empty()) {
    in.parent = TraceContext{trace_, id_, flags_};
    in.tracestate = state_;
  }
  return begin(name, kind, in);
}

std::string Span::traceparent() const { return format_traceparent(trace_, id_, flags_); }

Span& Span::attr(std::string_view key, std::string_view value) {
  if (data_) data_->attributes.push_back(Attribute{std::string(key), std::string(value), 0, false});
  return *this;
}

Span& Span::attr(std::string_view key, std::int64_t value) {
  if (data_) data_->attributes.push_back(Attribute{std::string(key), {}, value, true});
  return *this;
}

Span& Span::rename(std::string_view name) {
  if (data_) data_->name = std::string(name);
  return *this;
}

Span& Span::fail(std::string_view message) {
  if (data_) {
    data_->error = true;
    data_->status_message = std::string(message);
  }
  return *this;
}

void Span::end() {
  if (!data_) return;
  const auto elapsed = std::chrono::steady_clock::now() - started_;
  data_->end_unix_ns =
      data_->start_unix_ns +
      static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(elapsed).count());
  if (SpanSink* sink = g_sink.load(std::memory_order_acquire)) sink->submit(std::move(data_));
  data_.reset();
}

void end_exchange(Span& span, log::ExchangeRecord& rec) {
  rec.trace_id = span.trace_id();
  if (span.recording()) {
    std::string name = rec.method.empty() ? "relay" : std::string(rec.method);
    const std::string_view what = rec.api.empty() && rec.method.empty() ? rec.alias : rec.api;
    if (!what.empty()) (name += ' ') += what;
    span.rename(name);
    auto text = [&](std::string_view key, std::string_view value) {
      if (!value.empty()) span.attr(key, value);
    };
    text("http.request.method", rec.method);
    text("url.path", rec.path);
    text("client.address", rec.client);
    if (rec.status) span.attr("http.response.status_code", rec.status);
    text("postern.request_id", rec.request_id);
    text("postern.api", rec.api);
    text("postern.application", rec.application);
    text("postern.alias", rec.alias);
    text("postern.connector", rec.connector);
    text("postern.result", rec.result);
    if (rec.status >= 500) {
      span.fail("answered " + std::to_string(rec.status));
    } else if (!rec.result.empty() && rec.result != "ok" && rec.result != "client_gone" &&
               rec.result != "client_error") {
      span.fail(rec.result);
    }
  }
  span.end();
}

void end_call(Span& call, unsigned status) {
  call.attr("http.response.status_code", status);
  if (status >= 500) call.fail("answered " + std::to_string(status));
  call.end();
}

}  // namespace postern::tracing
