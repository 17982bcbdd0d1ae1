#include "common/policy/signed_snapshot.hpp"

#include "common/observability/log.hpp"

namespace postern::policy {

namespace {

std::string signing_input(std::string_view snapshot_bytes) {
  std::string in(kSnapshotSigningContext);
  in += '\0';
  in += snapshot_bytes;
  return in;
}

}  // namespace

pv1::SignedSnapshot sign_snapshot(const pv1::Snapshot& snapshot, const crypto::SigningKey& key) {
  pv1::SignedSnapshot out;
  snapshot.SerializeToString(out.mutable_snapshot());
  out.set_signature(key.sign(signing_input(out.snapshot())));
  out.set_key_id(key.key_id());
  return out;
}

std::shared_ptr<const SnapshotKeys> SnapshotKeys::load(const std::vector<std::string>& files,
                                                       const std::string& field) {
  if (files.empty()) {
    throw std::runtime_error(field + ": at least one public key file is required (policy snapshots are signed by "
                             "the policy service; see SECURITY.md)");
  }
  return std::make_shared<const SnapshotKeys>(crypto::load_verify_keys(files));
}

std::string SnapshotKeys::open(const pv1::SignedSnapshot& wire, pv1::Snapshot& out) const {
  if (wire.signature().empty()) return "the snapshot is not signed";
  const crypto::VerifyKey* key = nullptr;
  for (const auto& k : keys_) {
    if (k.key_id() == wire.key_id()) key = &k;
  }
  if (!key) return "signed by key '" + wire.key_id() + "', which is not trusted here (trusted: " + ids() + ")";
  if (!key->verify(signing_input(wire.snapshot()), wire.signature())) {
    return "the signature by key '" + wire.key_id() + "' does not match the snapshot";
  }
  pv1::Snapshot parsed;
  if (!parsed.ParseFromString(wire.snapshot())) return "the signed bytes are not a snapshot";
  if (parsed.version() == 0) return "a signed snapshot without a version";
  out = std::move(parsed);
  return {};
}

std::string SnapshotKeys::ids() const {
  std::string out;
  for (const auto& k : keys_) out += (out.empty() ? "" : ", ") + k.key_id();
  return out;
}

const char* outcome_label(SnapshotOutcome o) {
  switch (o) {
    case SnapshotOutcome::applied: return "applied";
    case SnapshotOutcome::unchanged: return "unchanged";
    case SnapshotOutcome::empty: return "empty";
    case SnapshotOutcome::untrusted: return "untrusted";
    case SnapshotOutcome::invalid: return "invalid";
  }
  return "invalid";
}

std::optional<SignedCatalog> open_snapshot(const SnapshotKeys& keys, std::shared_ptr<const pv1::SignedSnapshot> wire,
                                           const Catalog* current, std::string_view from, SnapshotOutcome& outcome) {
  if (wire->snapshot().empty() && wire->signature().empty()) {
    outcome = SnapshotOutcome::empty;
    return std::nullopt;
  }
  pv1::Snapshot snap;
  if (std::string why = keys.open(*wire, snap); !why.empty()) {
    outcome = SnapshotOutcome::untrusted;
    POSTERN_LOG(error, "policy snapshot refused; keeping the current one")
        .kv("from", from)
        .kv("reason", "untrusted")
        .kv("error", why);
    return std::nullopt;
  }
  if (current && current->version() == snap.version() && current->snapshot().digest() == snap.digest()) {
    outcome = SnapshotOutcome::unchanged;
    return std::nullopt;
  }
  const auto version = snap.version();
  std::vector<Issue> issues;
  auto cat = Catalog::compile(std::move(snap), issues);
  if (!cat) {
    outcome = SnapshotOutcome::invalid;
    POSTERN_LOG(error, "policy snapshot refused; keeping the current one")
        .kv("from", from)
        .kv("reason", "invalid")
        .kv("version", version)
        .kv("error", issues.empty() ? std::string() : issues.front().path + ": " + issues.front().message);
    return std::nullopt;
  }
  outcome = SnapshotOutcome::applied;
  POSTERN_LOG(info, "policy snapshot applied")
      .kv("from", from)
      .kv("version", version)
      .kv("key", wire->key_id())
      .kv("digest", cat->snapshot().digest().substr(0, 16))
      .kv("apis", cat->snapshot().config().apis_size());
  return SignedCatalog{std::move(cat), std::move(wire)};
}

}  // namespace postern::policy
