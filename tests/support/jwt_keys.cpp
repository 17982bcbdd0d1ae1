#include "support/jwt_keys.hpp"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>

#include <stdexcept>
#include <utility>

namespace postern::testing {
namespace {

// Big-endian bytes of a BIGNUM parameter, without leading zeros (JWK's form).
std::string bn_param(EVP_PKEY* pkey, const char* name) {
  BIGNUM* bn = nullptr;
  if (EVP_PKEY_get_bn_param(pkey, name, &bn) != 1) throw std::runtime_error("get_bn_param failed");
  std::string out(static_cast<std::size_t>(BN_num_bytes(bn)), '\0');
  BN_bn2bin(bn, reinterpret_cast<unsigned char*>(out.data()));
  BN_free(bn);
  return out;
}

// Returns {x, y} of the uncompressed public point.
std::pair<std::string, std::string> ec_point(EVP_PKEY* pkey) {
  unsigned char buf[65];
  std::size_t len = 0;
  if (EVP_PKEY_get_octet_string_param(pkey, OSSL_PKEY_PARAM_PUB_KEY, buf, sizeof buf, &len) != 1 || len != 65 ||
      buf[0] != 0x04) {
    throw std::runtime_error("EC public key export failed");
  }
  return {std::string(reinterpret_cast<char*>(buf + 1), 32), std::string(reinterpret_cast<char*>(buf + 33), 32)};
}

}  // namespace

void PkeyFree::operator()(EVP_PKEY* pkey) const { EVP_PKEY_free(pkey); }

PkeyPtr make_rsa_key(std::size_t bits) {
  PkeyPtr pkey(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", bits));
  if (!pkey) throw std::runtime_error("RSA keygen failed");
  return pkey;
}

PkeyPtr make_ec_key() {
  PkeyPtr pkey(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  if (!pkey) throw std::runtime_error("EC keygen failed");
  return pkey;
}

std::string b64url(std::string_view in) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  std::size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    const unsigned v = (static_cast<unsigned char>(in[i]) << 16) | (static_cast<unsigned char>(in[i + 1]) << 8) |
                       static_cast<unsigned char>(in[i + 2]);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (in.size() - i == 1) {
    const unsigned v = static_cast<unsigned char>(in[i]) << 16;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
  } else if (in.size() - i == 2) {
    const unsigned v = (static_cast<unsigned char>(in[i]) << 16) | (static_cast<unsigned char>(in[i + 1]) << 8);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
  }
  return out;
}

std::string rsa_jwk(EVP_PKEY* pkey, const std::string& kid, const std::string& extra) {
  std::string jwk = R"({"kty":"RSA","n":")" + b64url(bn_param(pkey, OSSL_PKEY_PARAM_RSA_N)) + R"(","e":")" +
                    b64url(bn_param(pkey, OSSL_PKEY_PARAM_RSA_E)) + "\"";
  if (!kid.empty()) jwk += R"(,"kid":")" + kid + "\"";
  return jwk + extra + "}";
}

std::string ec_jwk(EVP_PKEY* pkey, const std::string& kid, const std::string& extra) {
  const auto [x, y] = ec_point(pkey);
  std::string jwk = R"({"kty":"EC","crv":"P-256","x":")" + b64url(x) + R"(","y":")" + b64url(y) + "\"";
  if (!kid.empty()) jwk += R"(,"kid":")" + kid + "\"";
  return jwk + extra + "}";
}

std::string jwks(const std::vector<std::string>& keys) {
  std::string out = R"({"keys":[)";
  for (std::size_t i = 0; i < keys.size(); ++i) out += (i ? "," : "") + keys[i];
  return out + "]}";
}

std::string jws_signature(EVP_PKEY* pkey, std::string_view signing_input) {
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  const auto* data = reinterpret_cast<const unsigned char*>(signing_input.data());
  std::size_t len = 0;
  if (EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, pkey) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &len, data, signing_input.size()) != 1) {
    throw std::runtime_error("sign init failed");
  }
  std::string sig(len, '\0');
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len, data, signing_input.size()) != 1) {
    throw std::runtime_error("sign failed");
  }
  sig.resize(len);
  if (EVP_PKEY_is_a(pkey, "EC") == 0) return sig;
  // OpenSSL gives ECDSA-Sig-Value in DER; JWS wants r and s as fixed-width big-endian.
  const auto* p = reinterpret_cast<const unsigned char*>(sig.data());
  ECDSA_SIG* ecdsa = d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(sig.size()));
  if (ecdsa == nullptr) throw std::runtime_error("bad DER signature");
  std::string raw(64, '\0');
  BN_bn2binpad(ECDSA_SIG_get0_r(ecdsa), reinterpret_cast<unsigned char*>(raw.data()), 32);
  BN_bn2binpad(ECDSA_SIG_get0_s(ecdsa), reinterpret_cast<unsigned char*>(raw.data()) + 32, 32);
  ECDSA_SIG_free(ecdsa);
  return raw;
}

std::string signed_jwt(EVP_PKEY* pkey, const std::string& header, const std::string& payload) {
  const std::string input = b64url(header) + "." + b64url(payload);
  return input + "." + b64url(jws_signature(pkey, input));
}

}  // namespace postern::testing
