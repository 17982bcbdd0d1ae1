#include "common/policy/enforcement.hpp"

#include "common/policy/ws_policies.hpp"

namespace postern::policy {

namespace {

double ms_between(std::chrono::steady_clock::time_point from, std::chrono::steady_clock::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

}  // namespace

Policed::Policed(const ExchangePolicies& x, BodySource& inner_body, ResponseSink& inner_sink,
                 const ThreatRules& threats, bool json)
    : Policed(x, inner_body, inner_sink, threats, json, capture_limits(x.policies())) {}

Policed::Policed(const ExchangePolicies& x, BodySource& inner_body, ResponseSink& inner_sink,
                 const ThreatRules& threats, bool json, CaptureLimits capture)
    : body(inner_body, threats, json, capture.request),
      sink(inner_sink, x.api ? &x.policies()->transform() : nullptr, capture.response) {
  if (x.api) body.filter_trailers_for(x.api);
  sink.set_headers(&x.response_headers);
}

Enforcement::Enforcement(std::string point, prometheus::Registry& registry, const std::string& invocation_log_file)
    : point_(std::move(point)), decision_metrics_(registry, point_), invocations_(invocation_log_file) {}

asio::awaitable<Verdict> Enforcement::admit(ExchangePolicies& x, tunnel::v1::RequestHead& head, const Admission& a) {
  const CompiledApi& api = *x.api;
  co_await basic_verifier_.prepare(x.catalog, api, head);
  auto verdict = identify(*x.catalog, api, head, a.host, std::chrono::system_clock::now(), x.identity, x.decisions);
  if (verdict.allowed() && a.upgrade) {
    // Read after identify(), which may have edited the head.
    const std::string_view origin = a.origin ? *a.origin : header_value(head.headers(), "origin");
    verdict = check_origin(api, origin, x.decisions);
  }
  if (verdict.allowed()) {
    verdict = limiter_.admit(api, x.identity, a.client_ip, Limiter::Clock::now(), x.hold, x.decisions);
  }
  if (verdict.allowed()) {
    transform_request(api.def->policies().transform(), head);
    x.response_headers = std::move(verdict.headers);
    verdict.headers.clear();
  }
  co_return verdict;
}

void Enforcement::record(const ExchangePolicies& x, const Policed& p, const std::optional<ExchangeError>& failure,
                         const ExchangeFacts& facts) {
  const pv1::Policies* pol = x.policies();
  if (!pol || !pol->has_log_invocation()) return;
  auto r = exchange_record(pol->log_invocation(), p.body, p.sink, failure);
  if (!r) return;
  r->request_id = facts.request_id;
  r->trace_id = facts.trace_id;
  r->api = facts.api;
  r->application = x.identity.application;
  r->client_ip = facts.client_ip;
  r->method = facts.method;
  r->path = log_path(facts.target);
  r->enforced_by = point_;
  const auto now = std::chrono::steady_clock::now();
  r->total_ms = ms_between(facts.started, now);
  if (facts.upstream_started && p.sink.started()) {
    r->upstream_ms = ms_between(*facts.upstream_started, p.sink.head_at());
  }
  r->decisions = x.decisions;
  invocations_.write(*r, pol->log_invocation().compress_payload());
}

}  // namespace postern::policy
