#pragma once
// postern_<service>_policy_decisions_total{api, policy, outcome, reason}:
// every policy decision an enforcement point makes, allowed or not.

#include <prometheus/counter.h>

#include <string>

#include "common/observability/metric_children.hpp"
#include "common/policy/engine.hpp"

namespace prometheus {
class Registry;
}  // namespace prometheus

namespace postern::policy {

class DecisionMetrics {
 public:
  DecisionMetrics(prometheus::Registry& registry, const std::string& service);
  void count(const std::string& api, const Decisions& decisions);

 private:
  observability::MetricChildren<prometheus::Counter> children_;
};

}  // namespace postern::policy
