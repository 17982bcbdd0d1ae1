#include "broker/config_relay.hpp"

#include <grpcpp/grpcpp.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>

#include "common/observability/log.hpp"
#include "postern/policy/v1/policy.grpc.pb.h"

namespace postern::broker {

ConfigRelay::ConfigRelay(asio::any_io_executor ex, std::shared_ptr<const policy::SnapshotKeys> keys,
                         prometheus::Family<prometheus::Counter>& updates, prometheus::Gauge& version)
    : fanout_(std::move(ex), "edge", true), keys_(std::move(keys)), updates_(updates), version_(version) {}

void ConfigRelay::accept(const policy::v1::SignedSnapshot& wire, const Session& from) {
  auto count = [&](const char* result) { updates_.Add({{"result", result}}).Increment(); };
  if (!from.may_publish) {
    count("not_permitted");
    POSTERN_LOG(warn, "policy snapshot refused")
        .kv("connector", from.connector_id)
        .kv("identity", from.identity)
        .kv("reason", "identity '" + from.identity + "' may not publish config (identities[].publish_config)");
    return;
  }
  const auto mine = published_.find(from.id);
  policy::SnapshotOutcome outcome;
  auto got = policy::open_snapshot(*keys_, std::make_shared<const policy::v1::SignedSnapshot>(wire),
                                   mine == published_.end() ? nullptr : mine->second.catalog.get(),
                                   "connector " + from.connector_id, outcome);
  count(policy::outcome_label(outcome));
  if (!got) return;
  published_[from.id] = std::move(*got);
  serve_newest();
}

void ConfigRelay::forget(const Session& s) {
  if (published_.erase(s.id) > 0) serve_newest();
}

void ConfigRelay::serve_newest() {
  const policy::SignedCatalog* best = nullptr;
  for (const auto& [_, p] : published_) {
    if (!best || p.catalog->version() > best->catalog->version()) best = &p;
  }
  if (!best || best->wire == fanout_.current()) return;
  version_.Set(static_cast<double>(best->catalog->version()));
  POSTERN_LOG(info, "policy snapshot served to edges")
      .kv("version", best->catalog->version())
      .kv("digest", best->catalog->snapshot().digest().substr(0, 16));
  fanout_.publish(best->wire, best->catalog->version());
  served_ = best->catalog;
  if (on_served) on_served();
}

bool ConfigRelay::reload_keys(const std::vector<std::string>& files) {
  try {
    keys_ = policy::SnapshotKeys::load(files, "trusted_config_keys");
  } catch (const std::exception& e) {
    POSTERN_LOG(error, "trusted keys not reloaded; the old ones stay").kv("error", e.what());
    return false;
  }
  POSTERN_LOG(info, "trusted keys reloaded").kv("keys", keys_->ids());
  std::erase_if(published_, [&](const auto& p) {
    policy::v1::Snapshot ignored;
    return !keys_->open(*p.second.wire, ignored).empty();
  });
  serve_newest();
  return true;
}

}  // namespace postern::broker
