#pragma once
// postern_<service>_policy_decisions_total{api, policy, outcome, reason}:
// every policy decision an enforcement point makes, allowed or not.

#include <string>

#include "common/policy/engine.hpp"

namespace prometheus {
class Registry;
template <class T>
class Family;
class Counter;
}  // namespace prometheus

namespace postern::policy {

class DecisionMetrics {
 public:
  DecisionMetrics(prometheus::Registry& registry, const std::string& service);
  void count(const std::string& api, const Decisions& decisions);

 private:
  prometheus::Family<prometheus::Counter>& family_;
};

}  // namespace postern::policy
