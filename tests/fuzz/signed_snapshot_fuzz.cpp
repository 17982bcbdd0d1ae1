// libFuzzer target: a hop receiving a signed snapshot from the other zone
// (SnapshotKeys::open, then the catalog compile). Any bytes: never a crash,
// and never accepted, since only the policy service's key signs; the same
// bytes re-signed with that key are accepted exactly when they parse.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "common/crypto/keys.hpp"
#include "common/policy/catalog.hpp"
#include "common/policy/signed_snapshot.hpp"
#include "support/certs.hpp"

namespace {

namespace pv1 = postern::policy::v1;

struct Keys {
  postern::crypto::SigningKey signer;
  std::shared_ptr<const postern::policy::SnapshotKeys> trusted;
};

const Keys& keys() {
  static const Keys k = [] {
    const auto& certs = postern::testing::test_certs();
    return Keys{postern::crypto::SigningKey::from_file(certs.signing_key),
                postern::policy::SnapshotKeys::load({certs.signing_pub}, "trusted_config_keys")};
  }();
  return k;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  const auto& k = keys();
  // As it comes off the wire: a SignedSnapshot nobody trusted signed.
  pv1::SignedSnapshot wire;
  if (wire.ParseFromString(bytes)) {
    pv1::Snapshot out;
    if (k.trusted->open(wire, out).empty()) std::abort();  // a forgery was accepted
  }
  // The bytes as the snapshot of a correctly signed message: accepted iff
  // they parse as a snapshot with a version; then compiled, never crashing.
  pv1::SignedSnapshot good;
  good.set_snapshot(bytes);
  good.set_signature(k.signer.sign(std::string(postern::policy::kSnapshotSigningContext) + '\0' + bytes));
  good.set_key_id(k.signer.key_id());
  pv1::Snapshot out;
  if (k.trusted->open(good, out).empty()) {
    std::vector<postern::policy::Issue> issues;
    postern::policy::Catalog::compile(std::move(out), issues);
  }
  return 0;
}
