#include "common/policy/jwt.hpp"

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <stdexcept>
#include <system_error>
#include <utility>

namespace postern::policy {

namespace {

constexpr std::size_t kMaxTokenBytes = 16 * 1024;
constexpr std::size_t kMaxJwksFileBytes = 1024 * 1024;
// RFC 7518 section 3.3 requires 2048 bits; OpenSSL refuses to verify above 16384.
constexpr int kMinRsaBits = 2048;
constexpr std::size_t kMaxRsaModulusBytes = 16384 / 8;
constexpr std::size_t kP256CoordinateBytes = 32;
constexpr std::size_t kEs256SignatureBytes = 2 * kP256CoordinateBytes;

enum class KeyKind { kRsa, kEc };

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

struct PkeyCtxFree {
  void operator()(EVP_PKEY_CTX* p) const { EVP_PKEY_CTX_free(p); }
};
using PkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree>;

struct ParamBldFree {
  void operator()(OSSL_PARAM_BLD* p) const { OSSL_PARAM_BLD_free(p); }
};
struct ParamFree {
  void operator()(OSSL_PARAM* p) const { OSSL_PARAM_free(p); }
};
struct BnFree {
  void operator()(BIGNUM* p) const { BN_free(p); }
};
using BnPtr = std::unique_ptr<BIGNUM, BnFree>;

struct MdCtxFree {
  void operator()(EVP_MD_CTX* p) const { EVP_MD_CTX_free(p); }
};
struct EcdsaSigFree {
  void operator()(ECDSA_SIG* p) const { ECDSA_SIG_free(p); }
};

int b64url_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '-') return 62;
  if (c == '_') return 63;
  return -1;
}

// Strict: only the URL-safe alphabet, and the unused low bits of the last
// character must be zero, so one byte string has exactly one encoding.
// Padding is tolerated only where asked for (JWKS members written by tools
// that pad); JWS compact serialization never pads.
bool b64url_decode(std::string_view in, std::string& out, bool allow_padding) {
  if (allow_padding && in.size() % 4 == 0) {
    for (int i = 0; i < 2 && !in.empty() && in.back() == '='; ++i) in.remove_suffix(1);
  }
  if (in.size() % 4 == 1) return false;
  out.clear();
  out.reserve(in.size() * 3 / 4);
  std::uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    const int v = b64url_value(c);
    if (v < 0) return false;
    acc = (acc << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xFF));
    }
  }
  return (acc & ((1u << bits) - 1)) == 0;
}

// Returns false on anything that is not a JSON object. The parser's own
// message can quote the input, so it goes to `error` only when asked for.
bool parse_json_object(std::string_view text, google::protobuf::Struct& out, std::string* error) {
  const auto status = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece(text.data(), text.size()), &out);
  if (!status.ok()) {
    if (error != nullptr) *error = status.message().ToString();
    return false;
  }
  return true;
}

const google::protobuf::Value* find_field(const google::protobuf::Struct& object, const std::string& name) {
  const auto it = object.fields().find(name);
  return it == object.fields().end() ? nullptr : &it->second;
}

const std::string* find_string(const google::protobuf::Struct& object, const std::string& name) {
  const auto* v = find_field(object, name);
  return v != nullptr && v->kind_case() == google::protobuf::Value::kStringValue ? &v->string_value() : nullptr;
}

std::string describe_key(std::size_t index, const std::string* kid) {
  std::string d = "key " + std::to_string(index);
  if (kid != nullptr) d += " (kid '" + *kid + "')";
  return d;
}

// Decodes a required base64url member of a JWK, throwing with the key named.
std::string jwk_member(const google::protobuf::Struct& jwk, const std::string& name, const std::string& where) {
  const auto* v = find_string(jwk, name);
  if (v == nullptr) throw std::invalid_argument(where + ": missing string member \"" + name + "\"");
  std::string out;
  if (!b64url_decode(*v, out, true)) throw std::invalid_argument(where + ": bad base64url in \"" + name + "\"");
  if (out.empty()) throw std::invalid_argument(where + ": empty \"" + name + "\"");
  return out;
}

PkeyPtr pkey_from_params(const char* type, OSSL_PARAM_BLD* bld, const std::string& where) {
  std::unique_ptr<OSSL_PARAM, ParamFree> params(OSSL_PARAM_BLD_to_param(bld));
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr));
  EVP_PKEY* raw = nullptr;
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
      EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params.get()) != 1) {
    ERR_clear_error();
    throw std::invalid_argument(where + ": OpenSSL rejected the " + type + " public key");
  }
  PkeyPtr pkey(raw);
  // fromdata does not promise every sanity check; reject bad keys at load
  // time rather than have them fail every verification later.
  PkeyCtxPtr check(EVP_PKEY_CTX_new_from_pkey(nullptr, pkey.get(), nullptr));
  if (!check || EVP_PKEY_public_check(check.get()) != 1) {
    ERR_clear_error();
    throw std::invalid_argument(where + ": invalid " + type + " public key");
  }
  return pkey;
}

PkeyPtr make_rsa_key(const std::string& n, const std::string& e, const std::string& where) {
  if (n.size() > kMaxRsaModulusBytes) throw std::invalid_argument(where + ": RSA modulus too large");
  if (e.size() > 8) throw std::invalid_argument(where + ": RSA exponent too large");
  BnPtr n_bn(BN_bin2bn(reinterpret_cast<const unsigned char*>(n.data()), static_cast<int>(n.size()), nullptr));
  BnPtr e_bn(BN_bin2bn(reinterpret_cast<const unsigned char*>(e.data()), static_cast<int>(e.size()), nullptr));
  std::unique_ptr<OSSL_PARAM_BLD, ParamBldFree> bld(OSSL_PARAM_BLD_new());
  if (!n_bn || !e_bn || !bld || OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, n_bn.get()) != 1 ||
      OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, e_bn.get()) != 1) {
    ERR_clear_error();
    throw std::invalid_argument(where + ": cannot build RSA key");
  }
  auto pkey = pkey_from_params("RSA", bld.get(), where);
  const int bits = EVP_PKEY_get_bits(pkey.get());
  if (bits < kMinRsaBits) {
    throw std::invalid_argument(where + ": RSA modulus of " + std::to_string(bits) + " bits is below " +
                                std::to_string(kMinRsaBits));
  }
  return pkey;
}

PkeyPtr make_p256_key(const std::string& x, const std::string& y, const std::string& where) {
  if (x.size() != kP256CoordinateBytes || y.size() != kP256CoordinateBytes) {
    throw std::invalid_argument(where + ": P-256 x and y must be 32 bytes each");
  }
  // SEC 1 uncompressed point: 0x04 || x || y.
  std::string point(1, '\x04');
  point += x;
  point += y;
  std::unique_ptr<OSSL_PARAM_BLD, ParamBldFree> bld(OSSL_PARAM_BLD_new());
  if (!bld || OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, "P-256", 0) != 1 ||
      OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size()) != 1) {
    ERR_clear_error();
    throw std::invalid_argument(where + ": cannot build EC key");
  }
  return pkey_from_params("EC", bld.get(), where);
}

// JWS ES256 carries r||s as two 32-byte big-endian integers; OpenSSL wants DER.
bool es256_raw_to_der(std::string_view raw, std::string& der) {
  std::unique_ptr<ECDSA_SIG, EcdsaSigFree> sig(ECDSA_SIG_new());
  const auto* p = reinterpret_cast<const unsigned char*>(raw.data());
  BIGNUM* r = BN_bin2bn(p, static_cast<int>(kP256CoordinateBytes), nullptr);
  BIGNUM* s = BN_bin2bn(p + kP256CoordinateBytes, static_cast<int>(kP256CoordinateBytes), nullptr);
  if (!sig || r == nullptr || s == nullptr || ECDSA_SIG_set0(sig.get(), r, s) != 1) {
    BN_free(r);
    BN_free(s);
    return false;
  }
  const int len = i2d_ECDSA_SIG(sig.get(), nullptr);
  if (len <= 0) return false;
  der.resize(static_cast<std::size_t>(len));
  auto* out = reinterpret_cast<unsigned char*>(der.data());
  return i2d_ECDSA_SIG(sig.get(), &out) == len;
}

bool verify_sha256(EVP_PKEY* pkey, std::string_view signing_input, std::string_view signature) {
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  const bool ok = ctx && EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_sha256(), nullptr, pkey) == 1 &&
                  EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()),
                                   signature.size(), reinterpret_cast<const unsigned char*>(signing_input.data()),
                                   signing_input.size()) == 1;
  // A failed verify leaves entries on this thread's error queue; other
  // OpenSSL users on the thread (TLS) must not see them.
  ERR_clear_error();
  return ok;
}

// The alg value comes from the token and errors must not quote the token, so
// only names registered for JWS (RFC 7518, RFC 8037, RFC 8812) are echoed:
// they say what was tried without carrying anything the sender chose freely.
std::string unsupported_alg(const std::string& alg) {
  static constexpr std::string_view kRegistered[] = {
      "none",  "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256",
      "ES384", "ES512", "PS256", "PS384", "PS512", "EdDSA", "ES256K",
  };
  const bool known = std::find(std::begin(kRegistered), std::end(kRegistered), alg) != std::end(kRegistered);
  return known ? "unsupported alg '" + alg + "'" : "unsupported alg";
}

bool read_number(const google::protobuf::Value& v, double& out) {
  if (v.kind_case() != google::protobuf::Value::kNumberValue || !std::isfinite(v.number_value())) return false;
  out = v.number_value();
  return true;
}

JwtResult fail(std::string error) {
  JwtResult r;
  r.error = std::move(error);
  return r;
}

}  // namespace

struct Jwks::Key {
  KeyKind kind;
  bool has_kid = false;
  std::string kid;
  PkeyPtr pkey;
};

Jwks::Jwks() = default;
Jwks::~Jwks() = default;

std::size_t Jwks::size() const { return keys_.size(); }

std::shared_ptr<const Jwks> Jwks::parse(std::string_view json) {
  google::protobuf::Struct doc;
  std::string parse_error;
  if (!parse_json_object(json, doc, &parse_error)) {
    throw std::invalid_argument("JWKS is not a valid JSON object: " + parse_error);
  }
  const auto* keys = find_field(doc, "keys");
  if (keys == nullptr || keys->kind_case() != google::protobuf::Value::kListValue) {
    throw std::invalid_argument("JWKS has no \"keys\" array");
  }
  // Not make_shared: the constructor is private.
  std::shared_ptr<Jwks> out(new Jwks());
  const auto& list = keys->list_value().values();
  for (int i = 0; i < list.size(); ++i) {
    const auto index = static_cast<std::size_t>(i);
    if (list[i].kind_case() != google::protobuf::Value::kStructValue) {
      throw std::invalid_argument("JWKS " + describe_key(index, nullptr) + " is not an object");
    }
    const auto& jwk = list[i].struct_value();
    const auto* kid_field = find_field(jwk, "kid");
    if (kid_field != nullptr && kid_field->kind_case() != google::protobuf::Value::kStringValue) {
      throw std::invalid_argument("JWKS " + describe_key(index, nullptr) + ": \"kid\" is not a string");
    }
    const std::string* kid = kid_field != nullptr ? &kid_field->string_value() : nullptr;
    const std::string where = "JWKS " + describe_key(index, kid);

    // Skipping (rather than failing on) keys meant for something else lets
    // one JWKS also carry encryption keys or algorithms we do not verify.
    const auto* kty = find_string(jwk, "kty");
    if (kty == nullptr) continue;
    if (const auto* use = find_field(jwk, "use");
        use != nullptr && (use->kind_case() != google::protobuf::Value::kStringValue || use->string_value() != "sig")) {
      continue;
    }
    const auto* alg_field = find_field(jwk, "alg");
    const std::string* alg = nullptr;
    if (alg_field != nullptr) {
      if (alg_field->kind_case() != google::protobuf::Value::kStringValue) continue;
      alg = &alg_field->string_value();
    }

    Key key;
    if (*kty == "RSA") {
      if (alg != nullptr && *alg != "RS256") continue;
      key.kind = KeyKind::kRsa;
      key.pkey = make_rsa_key(jwk_member(jwk, "n", where), jwk_member(jwk, "e", where), where);
    } else if (*kty == "EC") {
      const auto* crv = find_string(jwk, "crv");
      if (crv == nullptr || *crv != "P-256") continue;
      if (alg != nullptr && *alg != "ES256") continue;
      key.kind = KeyKind::kEc;
      key.pkey = make_p256_key(jwk_member(jwk, "x", where), jwk_member(jwk, "y", where), where);
    } else {
      continue;
    }
    if (kid != nullptr) {
      key.has_kid = true;
      key.kid = *kid;
    }
    out->keys_.push_back(std::move(key));
  }
  if (out->keys_.empty()) {
    throw std::invalid_argument("JWKS has no usable key (need kty RSA, or EC with crv P-256, for signatures)");
  }
  return out;
}

std::shared_ptr<const Jwks> Jwks::load_file(const std::string& path) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!file) throw std::runtime_error(path + ": cannot read: " + std::generic_category().message(errno));
  std::string text;
  std::array<char, 8192> buffer;
  while (true) {
    const std::size_t n = std::fread(buffer.data(), 1, buffer.size(), file.get());
    text.append(buffer.data(), n);
    if (text.size() > kMaxJwksFileBytes) throw std::runtime_error(path + ": JWKS file is larger than 1 MiB");
    if (n < buffer.size()) break;
  }
  if (std::ferror(file.get())) {
    throw std::runtime_error(path + ": cannot read: " + std::generic_category().message(errno));
  }
  try {
    return parse(text);
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(path + ": " + e.what());
  }
}

JwtResult verify_jwt(std::string_view token, const Jwks& keys, const JwtExpectations& expect,
                     std::chrono::system_clock::time_point now) {
  // Untrusted input must never throw past here; bad_alloc is the only
  // realistic source, and it becomes an ordinary failure.
  try {
    if (token.size() > kMaxTokenBytes) return fail("token too large");
    const auto dot1 = token.find('.');
    const auto dot2 = dot1 == std::string_view::npos ? dot1 : token.find('.', dot1 + 1);
    if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos) {
      return fail("malformed token: expected three dot-separated parts");
    }
    const std::string_view header_b64 = token.substr(0, dot1);
    const std::string_view payload_b64 = token.substr(dot1 + 1, dot2 - dot1 - 1);
    const std::string_view signature_b64 = token.substr(dot2 + 1);
    std::string header_json;
    std::string payload_json;
    std::string signature;
    if (!b64url_decode(header_b64, header_json, false)) return fail("malformed token: bad base64url in header");
    if (!b64url_decode(payload_b64, payload_json, false)) return fail("malformed token: bad base64url in payload");
    if (!b64url_decode(signature_b64, signature, false)) return fail("malformed token: bad base64url in signature");

    google::protobuf::Struct header;
    if (!parse_json_object(header_json, header, nullptr)) return fail("malformed token: header is not a JSON object");
    const auto* alg = find_string(header, "alg");
    if (alg == nullptr) return fail("malformed token: header has no alg");
    KeyKind kind;
    if (*alg == "RS256") {
      kind = KeyKind::kRsa;
    } else if (*alg == "ES256") {
      kind = KeyKind::kEc;
    } else {
      return fail(unsupported_alg(*alg));
    }
    // RFC 7515 4.1.11: extensions listed in "crit" must be understood; we understand none.
    if (find_field(header, "crit") != nullptr) return fail("unsupported crit header");

    if (kind == KeyKind::kEc) {
      if (signature.size() != kEs256SignatureBytes) return fail("bad ES256 signature length");
      std::string der;
      if (!es256_raw_to_der(signature, der)) return fail("bad signature");
      signature = std::move(der);
    }

    const auto* kid_field = find_field(header, "kid");
    if (kid_field != nullptr && kid_field->kind_case() != google::protobuf::Value::kStringValue) {
      return fail("malformed token: kid is not a string");
    }
    const std::string_view signing_input = token.substr(0, dot2);
    bool kid_matched = false;
    bool tried = false;
    bool verified = false;
    for (const auto& key : keys.keys_) {
      if (kid_field != nullptr) {
        if (!key.has_kid || key.kid != kid_field->string_value()) continue;
        kid_matched = true;
      }
      if (key.kind != kind) continue;
      tried = true;
      if (verify_sha256(key.pkey.get(), signing_input, signature)) {
        verified = true;
        break;
      }
    }
    if (kid_field != nullptr && !kid_matched) return fail("unknown key id");
    if (!tried) return fail("no key for alg " + *alg);
    if (!verified) return fail("bad signature");

    // Claims are only looked at once the signature holds: an unsigned
    // payload gets no further than this.
    google::protobuf::Struct claims;
    if (!parse_json_object(payload_json, claims, nullptr)) return fail("malformed token: payload is not a JSON object");

    const double now_s = std::chrono::duration<double>(now.time_since_epoch()).count();
    const double leeway_s = static_cast<double>(expect.leeway.count());
    const auto* exp_field = find_field(claims, "exp");
    if (exp_field == nullptr) return fail("missing exp claim");
    double exp = 0;
    if (!read_number(*exp_field, exp)) return fail("exp claim is not a number");
    if (now_s > exp + leeway_s) return fail("token expired");
    if (const auto* nbf_field = find_field(claims, "nbf"); nbf_field != nullptr) {
      double nbf = 0;
      if (!read_number(*nbf_field, nbf)) return fail("nbf claim is not a number");
      if (now_s < nbf - leeway_s) return fail("token not yet valid");
    }

    if (!expect.issuer.empty()) {
      const auto* iss = find_string(claims, "iss");
      if (iss == nullptr || *iss != expect.issuer) return fail("wrong issuer");
    }

    if (!expect.audiences.empty()) {
      const auto accepted = [&expect](const std::string& aud) {
        return std::find(expect.audiences.begin(), expect.audiences.end(), aud) != expect.audiences.end();
      };
      const auto* aud = find_field(claims, "aud");
      bool match = false;
      if (aud != nullptr && aud->kind_case() == google::protobuf::Value::kStringValue) {
        match = accepted(aud->string_value());
      } else if (aud != nullptr && aud->kind_case() == google::protobuf::Value::kListValue) {
        for (const auto& v : aud->list_value().values()) {
          if (v.kind_case() == google::protobuf::Value::kStringValue && accepted(v.string_value())) {
            match = true;
            break;
          }
        }
      }
      if (!match) return fail("wrong audience");
    }

    const auto* subject = find_string(claims, expect.claim);
    if (subject == nullptr || subject->empty()) return fail("missing or empty '" + expect.claim + "' claim");

    JwtResult result;
    result.ok = true;
    result.subject = *subject;
    return result;
  } catch (const std::exception&) {
    return fail("internal error verifying token");
  }
}

}  // namespace postern::policy
