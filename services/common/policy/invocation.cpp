#include "common/policy/invocation.hpp"

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "common/net/http_headers.hpp"
#include "common/observability/log.hpp"
#include "common/policy/codec.hpp"
#include "common/policy/json_depth.hpp"

namespace postern::policy {

namespace tv1 = tunnel::v1;

namespace {

constexpr std::size_t kDefaultJsonBuffer = 1u << 20;

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", v);
  return buf;
}


void capture(Payload& p, std::size_t limit, std::string_view chunk) {
  p.total += chunk.size();
  if (p.data.size() < limit) {
    const std::size_t take = std::min(limit - p.data.size(), chunk.size());
    p.data.append(chunk.data(), take);
    if (take < chunk.size()) p.truncated = true;
  } else if (!chunk.empty()) {
    p.truncated = true;
  }
}

}  // namespace

void json_member(std::string& out, std::string_view key, std::string_view value) {
  if (!out.empty()) out += ',';
  out += '"';
  out.append(key);
  out += "\":\"";
  log::json_escape(out, value);
  out += '"';
}

void json_member_raw(std::string& out, std::string_view key, std::string_view json) {
  if (!out.empty()) out += ',';
  out += '"';
  out.append(key);
  out += "\":";
  out.append(json);
}

std::string decisions_json(const Decisions& decisions) {
  std::string dec = "[";
  for (const auto& d : decisions) {
    if (dec.size() > 1) dec += ',';
    std::string one;
    json_member(one, "policy", d.policy);
    json_member(one, "outcome", d.outcome);
    json_member(one, "reason", d.reason);
    dec += '{' + one + '}';
  }
  return dec + ']';
}

std::string payload_json(const Payload& p, bool compress) {
  std::string out = "{\"bytes\":" + std::to_string(p.total) + ",\"truncated\":" + (p.truncated ? "true" : "false");
  if (compress) {
    out += ",\"encoding\":\"gzip+base64\",\"data\":\"" + base64_encode(gzip_compress(p.data)) + "\"}";
  } else if (is_utf8(p.data)) {
    out += ",\"encoding\":\"text\",\"data\":\"";
    log::json_escape(out, p.data);
    out += "\"}";
  } else {
    out += ",\"encoding\":\"base64\",\"data\":\"" + base64_encode(p.data) + "\"}";
  }
  return out;
}

bool should_log(const pv1::LogInvocation& li, unsigned status, bool failed) {
  const bool failure = failed || status >= 400 || status == 0;
  switch (li.frequency()) {
    case pv1::LogInvocation::FREQUENCY_ON_FAILURE: return failure;
    case pv1::LogInvocation::FREQUENCY_ON_SUCCESS: return !failure;
    default: return true;
  }
}

CaptureLimits capture_limits(const pv1::Policies* pol) {
  if (!pol || !pol->has_log_invocation()) return {};
  const auto& li = pol->log_invocation();
  const std::size_t cap = li.max_payload_bytes() ? li.max_payload_bytes() : 65536;
  return {li.store_request_payload() ? cap : 0, li.store_response_payload() ? cap : 0};
}

std::optional<InvocationRecord> exchange_record(const pv1::LogInvocation& li, const PolicedBody& body,
                                                const PolicedSink& sink, const std::optional<ExchangeError>& failure) {
  const unsigned status = failure ? static_cast<unsigned>(http_status(failure->code())) : sink.status();
  if (!should_log(li, status, failure.has_value())) return std::nullopt;
  InvocationRecord r;
  r.status = status;
  if (failure) r.error = std::string(error_slug(failure->code()));
  r.request_bytes = body.bytes();
  r.response_bytes = sink.bytes();
  if (sink.native_us()) r.native_ms = static_cast<double>(sink.native_us()) / 1000.0;
  r.request_payload = body.payload();
  r.response_payload = sink.payload();
  return r;
}

std::string invocation_fields(const InvocationRecord& r, bool compress) {
  std::string out;
  json_member(out, "request_id", r.request_id);
  if (!r.trace_id.empty()) json_member(out, "trace_id", r.trace_id);
  json_member(out, "api", r.api);
  json_member(out, "application", r.application);
  json_member(out, "client_ip", r.client_ip);
  json_member(out, "method", r.method);
  json_member(out, "path", r.path);
  json_member(out, "enforced_by", r.enforced_by);
  json_member_raw(out, "status", std::to_string(r.status));
  if (!r.error.empty()) json_member(out, "error", r.error);
  json_member_raw(out, "request_bytes", std::to_string(r.request_bytes));
  json_member_raw(out, "response_bytes", std::to_string(r.response_bytes));
  std::string lat = "{\"total_ms\":" + number(r.total_ms);
  if (r.upstream_ms >= 0) lat += ",\"upstream_ms\":" + number(r.upstream_ms);
  if (r.native_ms >= 0) lat += ",\"native_ms\":" + number(r.native_ms);
  if (r.upstream_ms >= 0 && r.native_ms >= 0) {
    lat += ",\"tunnel_ms\":" + number(std::max(0.0, r.upstream_ms - r.native_ms));
  }
  lat += ",\"gateway_ms\":" + number(std::max(0.0, r.total_ms - std::max(0.0, r.upstream_ms)));
  lat += '}';
  json_member_raw(out, "latency", lat);
  json_member_raw(out, "decisions", decisions_json(r.decisions));
  if (r.request_payload) json_member_raw(out, "request_payload", payload_json(*r.request_payload, compress));
  if (r.response_payload) json_member_raw(out, "response_payload", payload_json(*r.response_payload, compress));
  return out;
}

InvocationLog::InvocationLog(const std::string& path) {
  if (path.empty()) return;
  file_ = std::fopen(path.c_str(), "ae");
  if (!file_) throw std::runtime_error("invocation_log_file: cannot open '" + path + "': " + std::strerror(errno));
}

InvocationLog::~InvocationLog() {
  if (file_) std::fclose(file_);
}

void InvocationLog::write(const InvocationRecord& r, bool compress) { write_fields(invocation_fields(r, compress)); }

void InvocationLog::write_fields(const std::string& fields) {
  const std::string line = log::write_record(log::Level::info, "invocation", fields);
  if (file_ && !line.empty()) {
    std::fwrite(line.data(), 1, line.size(), file_);
    std::fflush(file_);
  }
}

// ---------------------------------------------------------------- body

PolicedBody::PolicedBody(BodySource& inner, const ThreatRules& rules, bool json, std::size_t capture_bytes)
    : inner_(inner), rules_(rules), json_(json), capture_(capture_bytes) {}

bool PolicedBody::wants_prefetch() const { return json_ && rules_.json_depth.max > 0; }

void PolicedBody::account(std::string_view chunk) {
  total_ += chunk.size();
  if (capture_ > 0) capture(captured_, capture_, chunk);
  if (rules_.body_bytes.max > 0 && total_ > rules_.body_bytes.max) {
    if (!rules_.body_bytes.report_only) {
      throw ExchangeError(tv1::ERROR_CODE_PAYLOAD_TOO_LARGE,
                          "request body is over the limit of " + std::to_string(rules_.body_bytes.max) + " bytes");
    }
    reported_ = true;
  }
}

asio::awaitable<Verdict> PolicedBody::prefetch(Decisions& decisions) {
  const std::uint64_t cap = rules_.body_bytes.max > 0 && !rules_.body_bytes.report_only ? rules_.body_bytes.max
                                                                                         : kDefaultJsonBuffer;
  JsonDepthScanner scanner(static_cast<std::uint32_t>(rules_.json_depth.max));
  std::string_view chunk;
  for (;;) {
    const bool more = co_await inner_.next(chunk);
    if (!more) break;
    if (prefetched_.size() + chunk.size() > cap) {
      decisions.push_back({"threat_protection", "rejected", "body_too_large"});
      // A named value, not a temporary: GCC 12 mishandles temporaries in
      // coroutine return expressions as it does in co_await ones.
      Verdict v = Verdict::refuse(413, "threat_protection", "body_too_large",
                                  "a JSON body checked for depth may be at most " + std::to_string(cap) + " bytes");
      co_return v;
    }
    prefetched_.append(chunk);
    scanner.feed(chunk);
  }
  prefetched_done_ = true;
  if (scanner.exceeded()) {
    if (rules_.json_depth.report_only) {
      decisions.push_back({"threat_protection", "reported", "json_too_deep"});
    } else {
      decisions.push_back({"threat_protection", "rejected", "json_too_deep"});
      Verdict v = Verdict::refuse(400, "threat_protection", "json_too_deep",
                                  "JSON body nests deeper than " + std::to_string(rules_.json_depth.max) + " levels");
      co_return v;
    }
  }
  co_return Verdict{};
}

const Trailers& PolicedBody::trailers() const {
  if (!trailer_api_) return inner_.trailers();
  filtered_ = inner_.trailers();
  filter_request_trailers(trailer_api_, filtered_);
  return filtered_;
}

asio::awaitable<bool> PolicedBody::next(std::string_view& chunk) {
  if (prefetched_done_) {
    if (served_prefetch_ || prefetched_.empty()) co_return false;
    served_prefetch_ = true;
    chunk = prefetched_;
    account(chunk);
    co_return true;
  }
  const bool more = co_await inner_.next(chunk);
  if (more) account(chunk);
  co_return more;
}

std::optional<Payload> PolicedBody::payload() const {
  if (capture_ == 0) return std::nullopt;
  return captured_;
}

// ---------------------------------------------------------------- sink

PolicedSink::PolicedSink(ResponseSink& inner, const pv1::Transform* transform, std::size_t capture_bytes)
    : inner_(inner), transform_(transform), capture_(capture_bytes) {}

asio::awaitable<void> PolicedSink::head(tv1::ResponseHead& h) {
  started_ = true;
  head_at_ = std::chrono::steady_clock::now();
  status_ = h.status();
  if (native_start_) {
    h.set_native_us(static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(head_at_ - *native_start_).count()));
    if (!application_.empty()) h.set_application(application_);
  }
  native_us_ = h.native_us();
  if (transform_) transform_response(*transform_, h);
  if (extra_ && !extra_->empty()) {
    auto& hs = *h.mutable_headers();
    for (const auto& [name, value] : *extra_) {
      for (int i = hs.size() - 1; i >= 0; --i) {
        if (net::iequals(hs[i].name(), name)) hs.DeleteSubrange(i, 1);
      }
      auto* added = hs.Add();
      added->set_name(name);
      added->set_value(value);
    }
  }
  co_await inner_.head(h);
}

asio::awaitable<void> PolicedSink::body(std::string_view chunk) {
  total_ += chunk.size();
  if (capture_ > 0) capture(captured_, capture_, chunk);
  co_await inner_.body(chunk);
}

asio::awaitable<void> PolicedSink::end(const Trailers& trailers) { co_await inner_.end(trailers); }

asio::awaitable<void> PolicedSink::idle() { co_await inner_.idle(); }

std::optional<Payload> PolicedSink::payload() const {
  if (capture_ == 0) return std::nullopt;
  return captured_;
}

bool is_json_content_type(std::string_view ct) {
  const auto semi = ct.find(';');
  std::string_view t = ct.substr(0, semi);
  while (!t.empty() && t.back() == ' ') t.remove_suffix(1);
  if (net::iequals(t, "application/json")) return true;
  return t.size() > 5 && net::iequals(t.substr(t.size() - 5), "+json");
}

}  // namespace postern::policy
