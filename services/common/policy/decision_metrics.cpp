#include "common/policy/decision_metrics.hpp"

#include <prometheus/counter.h>
#include <prometheus/registry.h>

namespace postern::policy {

DecisionMetrics::DecisionMetrics(prometheus::Registry& registry, const std::string& service)
    : children_(prometheus::BuildCounter()
                    .Name("postern_" + service + "_policy_decisions_total")
                    .Help("Policy decisions by API, policy, outcome (allowed, rejected, reported) and reason")
                    .Register(registry),
                {"api", "policy", "outcome", "reason"}) {}

void DecisionMetrics::count(const std::string& api, const Decisions& decisions) {
  for (const auto& d : decisions) {
    children_.get({api, d.policy, d.outcome, d.reason}).Increment();
  }
}

}  // namespace postern::policy
