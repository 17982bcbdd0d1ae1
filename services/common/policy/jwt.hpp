#pragma once
// JWT bearer-token verification (RFC 7519 / RFC 7515 compact JWS) for RS256
// and ES256, with public keys from a JWKS document. OpenSSL stays out of this
// header so callers do not pull it in.

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace postern::policy {

struct JwtExpectations;
struct JwtResult;

/// Verification keys from a JWKS document (RFC 7517). Immutable; thread-safe to share.
class Jwks {
 public:
  /// Parses JWKS JSON text. Uses keys with kty "RSA" (n, e) and kty "EC" with crv "P-256" (x, y);
  /// keys whose "use" is present and not "sig", or whose "alg" is present and not RS256/ES256
  /// (matching the kty), are skipped. Throws std::invalid_argument with a clear message
  /// (bad JSON, no "keys" array, bad base64url in a key, no usable key at all). A key of a
  /// usable kind whose material is broken (missing or malformed n/e/x/y, a point not on the
  /// curve, an RSA modulus under 2048 bits) also throws rather than being silently dropped.
  static std::shared_ptr<const Jwks> parse(std::string_view json);
  /// Reads and parses a file (at most 1 MiB). Throws std::runtime_error "PATH: cannot read:
  /// <strerror>" or "PATH: <parse error>".
  static std::shared_ptr<const Jwks> load_file(const std::string& path);

  ~Jwks();
  Jwks(const Jwks&) = delete;
  Jwks& operator=(const Jwks&) = delete;

  /// Number of usable keys.
  std::size_t size() const;

 private:
  struct Key;  // EVP_PKEY* with its kid and kind; defined in jwt.cpp

  Jwks();

  std::vector<Key> keys_;

  friend JwtResult verify_jwt(std::string_view token, const Jwks& keys, const JwtExpectations& expect,
                              std::chrono::system_clock::time_point now);
};

struct JwtExpectations {
  std::string issuer;                  ///< required "iss" when non-empty
  std::vector<std::string> audiences;  ///< "aud" (string or array) must contain one, when non-empty
  std::chrono::seconds leeway{30};     ///< clock skew allowed on exp / nbf
  std::string claim = "sub";           ///< claim whose string value identifies the caller
};

struct JwtResult {
  bool ok = false;
  /// Why verification failed, short and safe to log or to put in a WWW-Authenticate
  /// error_description: never contains the token or any part of it.
  std::string error;
  /// The value of JwtExpectations::claim (set when ok).
  std::string subject;
};

/// Verifies a compact JWS (header.payload.signature): alg RS256 or ES256 only, the key picked by
/// "kid" when the header has one, then exp (required), nbf, iss, aud and the identifying claim.
/// Tokens over 16 KiB are rejected. Never throws; failures come back in JwtResult::error.
/// Thread-safe: any number of threads may verify against the same Jwks at once.
JwtResult verify_jwt(std::string_view token, const Jwks& keys, const JwtExpectations& expect,
                     std::chrono::system_clock::time_point now);

}  // namespace postern::policy
