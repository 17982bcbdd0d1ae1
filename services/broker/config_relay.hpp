#pragma once
// The broker's part in "config flows outward": connectors relay what the
// policy service signed; the broker takes a snapshot only from an identity
// granted publish_config and only with a valid signature by a trusted key,
// and serves edges (WatchConfig) the newest one its attached connectors hold
// now. When the connector that relayed the newest leaves, or its signing key
// is withdrawn, edges follow the others back; with no publisher left, the
// last one stays. Include only in .cpp files (gRPC headers).
//
// Single-threaded: the broker's executor.

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "broker/registry.hpp"
#include "common/grpc/snapshot_fanout.hpp"
#include "common/policy/signed_snapshot.hpp"

namespace prometheus {
class Counter;
class Gauge;
template <typename T>
class Family;
}  // namespace prometheus

namespace postern::broker {

class ConfigRelay {
 public:
  /// `updates` counts snapshots by result; `version` shows the one served.
  ConfigRelay(asio::any_io_executor ex, std::shared_ptr<const policy::SnapshotKeys> keys,
              prometheus::Family<prometheus::Counter>& updates, prometheus::Gauge& version);

  /// A snapshot a connector relayed on its Attach stream.
  void accept(const policy::v1::SignedSnapshot& wire, const Session& from);
  /// The session detached: its snapshot no longer counts.
  void forget(const Session& s);
  /// New trusted keys: snapshots no longer signed by one of them stop
  /// counting. Returns false (and keeps the old keys) if `files` do not load.
  bool reload_keys(const std::vector<std::string>& files);

  grpc_bridge::SnapshotFanout& fanout() { return fanout_; }
  /// The snapshot served to edges now (null before the first).
  const policy::Catalog* served() const { return served_.get(); }
  /// Called after the served snapshot changed.
  std::function<void()> on_served;

 private:
  void serve_newest();

  grpc_bridge::SnapshotFanout fanout_;
  std::shared_ptr<const policy::SnapshotKeys> keys_;
  prometheus::Family<prometheus::Counter>& updates_;
  prometheus::Gauge& version_;
  // Each attached publisher's latest snapshot, by session id.
  std::map<std::string, policy::SignedCatalog> published_;
  std::shared_ptr<const policy::Catalog> served_;
};

}  // namespace postern::broker
