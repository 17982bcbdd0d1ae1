#pragma once

#include <openssl/types.h>

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

/// Signing keys, JWKS documents and signed JWTs for tests of JWT verification.
///
/// Keys are OpenSSL 3 EVP_PKEYs (RSA, or EC on P-256); JWKs are built from a
/// key's public parameters, and tokens are signed RS256 or ES256 as RFC 7515
/// wants them. Every function throws std::runtime_error when OpenSSL refuses;
/// none keeps state, so all may be called from any thread (a key may be shared
/// between threads for signing, as OpenSSL allows).
namespace postern::testing {

/// Deleter for PkeyPtr.
struct PkeyFree {
  void operator()(EVP_PKEY* pkey) const;
};

/// An owned EVP_PKEY.
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

/// A fresh RSA key pair of `bits` bits (2048 takes a noticeable fraction of a
/// second: make one per suite, not per test).
PkeyPtr make_rsa_key(std::size_t bits = 2048);

/// A fresh EC key pair on P-256.
PkeyPtr make_ec_key();

/// Base64url without padding (RFC 7515 section 2), as JWS and JWK use it.
std::string b64url(std::string_view in);

/// The public JWK of an RSA key: {"kty":"RSA","n":..,"e":..}, then
/// ,"kid":"<kid>" unless `kid` is empty, then `extra` verbatim (e.g.
/// R"(,"use":"sig")"), which must be empty or start with a comma.
std::string rsa_jwk(EVP_PKEY* pkey, const std::string& kid = "", const std::string& extra = "");

/// The public JWK of a P-256 key: {"kty":"EC","crv":"P-256","x":..,"y":..},
/// with `kid` and `extra` as for rsa_jwk.
std::string ec_jwk(EVP_PKEY* pkey, const std::string& kid = "", const std::string& extra = "");

/// A JWKS document, {"keys":[...]}, from JWKs given as JSON text.
std::string jwks(const std::vector<std::string>& keys);

/// The SHA-256 signature of `signing_input` as a JWS carries it (before
/// base64url): PKCS#1 v1.5 bytes for an RSA key (RS256), raw r||s of 32 bytes
/// each for a P-256 key (ES256), not the DER that OpenSSL emits.
std::string jws_signature(EVP_PKEY* pkey, std::string_view signing_input);

/// A compact JWS: b64url(header) "." b64url(payload) "." b64url(signature).
/// `header` and `payload` are used as given, so a test may sign malformed JSON.
std::string signed_jwt(EVP_PKEY* pkey, const std::string& header, const std::string& payload);

}  // namespace postern::testing
