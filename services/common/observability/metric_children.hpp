#pragma once
// A metric family's children found by their label values, for metrics
// counted on every exchange. prometheus::Family::Add builds a label map (a
// node and two strings per label), hashes it and takes the family's lock on
// every call: about a tenth of a hop's own CPU per request at load. Here
// the first call for a set of values adds the child to the family; later
// calls find it in a map keyed by the values alone.
//
//   MetricChildren<prometheus::Counter> requests(family, {"api", "code"});
//   requests.get({api, "200"}).Increment();
//
// Children are never removed from a family (the project never calls
// Remove), so a cached pointer stays valid as long as the family does.
// Thread-safe.

#include <prometheus/family.h>

#include <charconv>
#include <cstddef>
#include <initializer_list>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace postern::observability {

template <class Metric>
class MetricChildren {
 public:
  MetricChildren(prometheus::Family<Metric>& family, std::vector<std::string> label_names)
      : family_(family), names_(std::move(label_names)) {}
  MetricChildren(const MetricChildren&) = delete;
  MetricChildren& operator=(const MetricChildren&) = delete;

  /// The child with these label values (in the order of the names given to
  /// the constructor); `args` go to Family::Add when it is new (a
  /// histogram's buckets).
  template <class... Args>
  Metric& get(std::initializer_list<std::string_view> values, const Args&... args) {
    std::lock_guard lock(mu_);
    key_.clear();
    for (const auto v : values) {
      // Each value behind its length: no two sets of values make one key,
      // whatever bytes they hold.
      char len[24];
      const auto r = std::to_chars(len, len + sizeof len, v.size());
      key_.append(len, r.ptr);
      key_.push_back(':');
      key_.append(v);
    }
    if (const auto it = children_.find(key_); it != children_.end()) return *it->second;
    std::map<std::string, std::string> labels;
    std::size_t i = 0;
    for (const auto v : values) labels.emplace(names_.at(i++), std::string(v));
    Metric& child = family_.Add(labels, args...);
    children_.emplace(key_, &child);
    return child;
  }

 private:
  prometheus::Family<Metric>& family_;
  const std::vector<std::string> names_;
  std::mutex mu_;
  std::string key_;  // scratch, under mu_
  std::unordered_map<std::string, Metric*> children_;
};

}  // namespace postern::observability
