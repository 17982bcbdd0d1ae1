#pragma once

#include <string>

/// Test PKI made by deploy/certs/make-dev-certs.sh.
namespace postern::testing {

/// Absolute paths of the dev certificates and keys (PEM).
struct Certs {
  std::string dir;
  std::string ca;                   ///< ca.crt: signs every certificate below except the rogue ones
  std::string broker_crt, broker_key;
  std::string edge_crt, edge_key;
  std::string connector_crt, connector_key;
  std::string connector_other_crt, connector_other_key;  ///< a second connector identity
  std::string native_crt, native_key;                    ///< a native service's client identity
  std::string rogue_ca;                                  ///< rogue-ca.crt: a CA nobody trusts
  std::string rogue_connector_crt, rogue_connector_key;  ///< signed by the rogue CA
  std::string edge_client_crt, edge_client_key;          ///< the edge's identity on the relay port
  std::string signing_key, signing_pub;                  ///< Ed25519: the policy service signs snapshots
  std::string rogue_signing_key, rogue_signing_pub;      ///< Ed25519 that nothing trusts
};

/// Runs `bash deploy/certs/make-dev-certs.sh DIR` once per test process, into a
/// temp dir that lives until the process exits, and returns the paths.
/// Throws std::runtime_error (with the script's output) if the script fails or
/// a file is missing; a later call tries again. Thread-safe.
const Certs& test_certs();

}  // namespace postern::testing
