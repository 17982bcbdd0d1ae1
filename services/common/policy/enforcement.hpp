#pragma once
// One enforcement sequence for both enforcement points: the edge (APIs the
// DMZ enforces) and the connector (green APIs, and whatever the edge did not
// enforce). For each exchange:
//   1. admit(): identify the application, check a WebSocket upgrade's
//      Origin, take rate and concurrency limits, then transform the request
//      head; a refusal comes back as a Verdict for the caller to answer;
//   2. Policed: the request body and the response wrapped in the policies
//      (body limits, the response transformation, payload capture);
//   3. record(): the Log Invocation record of the finished exchange, and
//      count(): its policy decisions as metrics.
// Threat protection (the edge's, before any of this) and how a refusal
// reaches the client stay with the caller.
//
// Single-threaded: the service's executor.

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/policy/basic_verifier.hpp"
#include "common/policy/decision_metrics.hpp"
#include "common/policy/engine.hpp"
#include "common/policy/invocation.hpp"

namespace prometheus {
class Registry;
}

namespace postern::policy {

/// What one exchange holds of its policies, from its admission to its
/// record. A WebSocket session keeps the catalog and the hold for its life.
struct ExchangePolicies {
  std::shared_ptr<const Catalog> catalog;  ///< the exchange's snapshot; `api` points into it
  const CompiledApi* api = nullptr;        ///< the API whose policies run here; null: none do
  Identity identity;
  Decisions decisions;
  Limiter::Hold hold;  ///< concurrency slots taken by admit()
  /// Headers admission adds to the response (RateLimit-*).
  std::vector<std::pair<std::string, std::string>> response_headers;

  const pv1::Policies* policies() const { return api ? &api->def->policies() : nullptr; }
};

/// What admission needs to know of a request besides its head.
struct Admission {
  std::string_view host;  ///< the Host the client asked for ("" if none)
  std::string_view client_ip;
  bool upgrade = false;  ///< a WebSocket upgrade: its Origin must be allowed
  /// The upgrade's Origin as the client sent it; nullopt: the head's own
  /// Origin field, as identification left it.
  std::optional<std::string_view> origin;
};

/// The request body and the response of one exchange under its policies.
struct Policed {
  /// `threats`: body limits and the JSON depth rule (kNoThreatRules where
  /// threat protection is another hop's); `json`: the body is JSON.
  Policed(const ExchangePolicies& x, BodySource& inner_body, ResponseSink& inner_sink, const ThreatRules& threats,
          bool json);

  PolicedBody body;
  PolicedSink sink;

 private:
  Policed(const ExchangePolicies& x, BodySource& inner_body, ResponseSink& inner_sink, const ThreatRules& threats,
          bool json, CaptureLimits capture);
};

/// Who and what an exchange's record names, as the enforcement point saw it.
/// `target`: the request target (the record shows its log_path()).
struct ExchangeFacts {
  std::string_view request_id, api, client_ip, method, target;
  std::chrono::steady_clock::time_point started;
  /// When the exchange went on to the next hop, if this point measures it
  /// (the edge): the record then gets upstream_ms.
  std::optional<std::chrono::steady_clock::time_point> upstream_started;
  std::string_view trace_id{};
};

/// An enforcement point's policy state: Basic credential checks, rate and
/// concurrency limits, decision metrics, the invocation log.
class Enforcement {
 public:
  /// `point`: "edge" or "connector", the records' enforced_by and the
  /// metrics' service name. Throws std::runtime_error naming
  /// `invocation_log_file` if it cannot be opened.
  Enforcement(std::string point, prometheus::Registry& registry, const std::string& invocation_log_file);

  /// Identify & Authorize Application, the upgrade's Origin, rate and
  /// concurrency limits for `x.api` (not null, with `x.catalog`); once
  /// allowed, the request transformation of `head`. A refusal is returned
  /// for the caller to answer; `x` gets the decisions, the identity and the
  /// hold either way.
  asio::awaitable<Verdict> admit(ExchangePolicies& x, tunnel::v1::RequestHead& head, const Admission& a);

  /// The Log Invocation record of a finished exchange, when its API's
  /// policies run here and want one for this outcome.
  void record(const ExchangePolicies& x, const Policed& p, const std::optional<ExchangeError>& failure,
              const ExchangeFacts& facts);

  /// postern_<point>_policy_decisions_total for `decisions` under `api`.
  void count(const std::string& api, const Decisions& decisions) { decision_metrics_.count(api, decisions); }

  /// Where WebSocket sessions write their records.
  InvocationLog& invocations() { return invocations_; }

 private:
  std::string point_;
  BasicVerifier basic_verifier_;
  Limiter limiter_;
  DecisionMetrics decision_metrics_;
  InvocationLog invocations_;
};

}  // namespace postern::policy
