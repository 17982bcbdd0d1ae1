#pragma once
// Signing and verifying with Ed25519 or ECDSA P-256 (SHA-256) keys from PEM
// files, through OpenSSL 3. Other key types (RSA, other curves) are refused
// when loaded, so a deployment cannot drift to a weaker or slower scheme.
// Keys are immutable once loaded; sign() and verify() are thread-safe.

#include <memory>
#include <string>
#include <string_view>
#include <vector>

typedef struct evp_pkey_st EVP_PKEY;

namespace postern::crypto {

/// A private key that signs.
class SigningKey {
 public:
  /// Reads a PEM private key ("-----BEGIN PRIVATE KEY-----", as `openssl
  /// genpkey -algorithm ed25519` writes). Throws std::runtime_error naming
  /// `path` and what is wrong (unreadable, not a private key, wrong type).
  static SigningKey from_file(const std::string& path);
  static SigningKey from_pem(std::string_view pem, const std::string& what);

  /// The signature of `data`: 64 bytes for Ed25519, DER for ECDSA.
  std::string sign(std::string_view data) const;
  /// key_id() of the matching public key.
  const std::string& key_id() const { return key_id_; }
  /// The public key as PEM ("-----BEGIN PUBLIC KEY-----").
  std::string public_pem() const;

 private:
  std::shared_ptr<EVP_PKEY> key_;
  std::string key_id_;
};

/// A public key that verifies.
class VerifyKey {
 public:
  /// Reads a PEM public key ("-----BEGIN PUBLIC KEY-----"). Throws
  /// std::runtime_error naming `what` and the problem.
  static VerifyKey from_pem(std::string_view pem, const std::string& what);
  bool verify(std::string_view data, std::string_view signature) const;
  const std::string& key_id() const { return key_id_; }

 private:
  std::shared_ptr<EVP_PKEY> key_;
  std::string key_id_;
};

/// Every public key in one or more PEM files (a file may hold several).
/// Throws std::runtime_error naming the file when one cannot be read or
/// holds no usable key.
std::vector<VerifyKey> load_verify_keys(const std::vector<std::string>& paths);

}  // namespace postern::crypto
