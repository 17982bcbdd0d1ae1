#pragma once
// Signed policy snapshots: the policy service signs each snapshot it
// publishes; every hop that receives one (connector, broker, edge) checks the
// signature against the public keys it trusts before it parses a byte of the
// snapshot, and relays the signed bytes unchanged. A hop that relays config
// can therefore neither forge nor alter it (SECURITY.md, "Signed config").

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/crypto/keys.hpp"
#include "common/policy/catalog.hpp"

namespace postern::policy {

/// What the signature covers: this context, a NUL, then the snapshot bytes.
inline constexpr std::string_view kSnapshotSigningContext = "postern.snapshot.v1";

/// Serializes `snapshot` and signs it with `key`.
pv1::SignedSnapshot sign_snapshot(const pv1::Snapshot& snapshot, const crypto::SigningKey& key);

/// The public keys a hop trusts. Immutable; a reload builds a new one.
class SnapshotKeys {
 public:
  explicit SnapshotKeys(std::vector<crypto::VerifyKey> keys) : keys_(std::move(keys)) {}
  /// Every key in `files` (PEM, several per file allowed). Throws
  /// std::runtime_error naming the file when one is unreadable or holds no
  /// usable key, and when `files` is empty (`field` names the config field).
  static std::shared_ptr<const SnapshotKeys> load(const std::vector<std::string>& files, const std::string& field);

  /// Checks the signature on `wire` and parses its snapshot into `out`.
  /// Returns why it was refused ("" when accepted): no signature, no trusted
  /// key with that id, a bad signature, or bytes that do not parse.
  std::string open(const pv1::SignedSnapshot& wire, pv1::Snapshot& out) const;

  /// The key ids, comma-separated, for logs.
  std::string ids() const;

 private:
  std::vector<crypto::VerifyKey> keys_;
};

/// A hop's config: the compiled catalog and the signed bytes it came from.
struct SignedCatalog {
  std::shared_ptr<const Catalog> catalog;
  std::shared_ptr<const pv1::SignedSnapshot> wire;
};

/// What a hop did with a snapshot it received.
enum class SnapshotOutcome {
  applied,    ///< verified, compiled, and different from what the hop held
  unchanged,  ///< the version and digest it already held
  empty,      ///< "no config yet" (no bytes): nothing to apply
  untrusted,  ///< refused: no signature by a trusted key
  invalid,    ///< signed, but it does not compile
};
/// The metric label: "applied", "unchanged", "empty", "untrusted", "invalid".
const char* outcome_label(SnapshotOutcome o);

/// A hop's handling of a snapshot it received from `from` (for logs):
/// verify with `keys`, parse, compile. Logs "policy snapshot applied" or
/// "policy snapshot refused" (with the reason). Returns the new config when
/// the outcome is `applied`; `current` (may be null) is what the hop holds.
std::optional<SignedCatalog> open_snapshot(const SnapshotKeys& keys, std::shared_ptr<const pv1::SignedSnapshot> wire,
                                           const Catalog* current, std::string_view from, SnapshotOutcome& outcome);

}  // namespace postern::policy
