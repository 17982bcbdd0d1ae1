#include "common/crypto/keys.hpp"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <stdexcept>

#include "common/net/tls.hpp"
#include "common/policy/codec.hpp"

namespace postern::crypto {

namespace {

std::shared_ptr<EVP_PKEY> own(EVP_PKEY* k) { return std::shared_ptr<EVP_PKEY>(k, EVP_PKEY_free); }

// The first 16 hex digits of the SHA-256 of the key's SubjectPublicKeyInfo
// (DER): the same for a private key and its public half.
std::string key_id_of(EVP_PKEY* k) {
  unsigned char* der = nullptr;
  const int n = i2d_PUBKEY(k, &der);
  if (n <= 0) throw std::runtime_error("cannot encode a public key");
  std::string id = policy::sha256_hex(std::string_view(reinterpret_cast<const char*>(der), static_cast<std::size_t>(n)));
  OPENSSL_free(der);
  return id.substr(0, 16);
}

bool is_ed25519(EVP_PKEY* k) { return EVP_PKEY_is_a(k, "ED25519") == 1; }

// Ed25519 or EC on P-256; anything else is refused with its name.
void check_type(EVP_PKEY* k, const std::string& what) {
  if (is_ed25519(k)) return;
  if (EVP_PKEY_is_a(k, "EC") == 1) {
    char group[64] = {};
    std::size_t len = 0;
    if (EVP_PKEY_get_utf8_string_param(k, "group", group, sizeof group, &len) == 1 &&
        std::string_view(group) == "prime256v1") {
      return;
    }
    throw std::runtime_error(what + ": an EC key on curve '" + std::string(group) +
                             "'; only Ed25519 and ECDSA P-256 (prime256v1) keys are accepted");
  }
  throw std::runtime_error(what + ": a " + std::string(EVP_PKEY_get0_type_name(k) ? EVP_PKEY_get0_type_name(k) : "?") +
                           " key; only Ed25519 and ECDSA P-256 keys are accepted");
}

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct MdCtxFree {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};

std::unique_ptr<BIO, BioFree> mem_bio(std::string_view pem) {
  return std::unique_ptr<BIO, BioFree>(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

}  // namespace

SigningKey SigningKey::from_file(const std::string& path) {
  return from_pem(net::read_pem_file(path, "signing key"), "signing key '" + path + "'");
}

SigningKey SigningKey::from_pem(std::string_view pem, const std::string& what) {
  auto bio = mem_bio(pem);
  EVP_PKEY* k = bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr) : nullptr;
  ERR_clear_error();
  if (!k) throw std::runtime_error(what + ": not a PEM private key (make one with `openssl genpkey -algorithm ed25519`)");
  SigningKey s;
  s.key_ = own(k);
  check_type(k, what);
  s.key_id_ = key_id_of(k);
  return s;
}

std::string SigningKey::sign(std::string_view data) const {
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  // Ed25519 hashes internally (no digest); ECDSA signs a SHA-256.
  const EVP_MD* md = is_ed25519(key_.get()) ? nullptr : EVP_sha256();
  std::size_t len = 0;
  const auto* in = reinterpret_cast<const unsigned char*>(data.data());
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, md, nullptr, key_.get()) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &len, in, data.size()) != 1) {
    ERR_clear_error();
    throw std::runtime_error("signing failed");
  }
  std::string sig(len, '\0');
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len, in, data.size()) != 1) {
    ERR_clear_error();
    throw std::runtime_error("signing failed");
  }
  sig.resize(len);
  return sig;
}

std::string SigningKey::public_pem() const {
  std::unique_ptr<BIO, BioFree> bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PUBKEY(bio.get(), key_.get()) != 1) throw std::runtime_error("cannot write a public key");
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(n));
}

VerifyKey VerifyKey::from_pem(std::string_view pem, const std::string& what) {
  auto bio = mem_bio(pem);
  EVP_PKEY* k = bio ? PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr) : nullptr;
  ERR_clear_error();
  if (!k) throw std::runtime_error(what + ": not a PEM public key (\"-----BEGIN PUBLIC KEY-----\")");
  VerifyKey v;
  v.key_ = own(k);
  check_type(k, what);
  v.key_id_ = key_id_of(k);
  return v;
}

bool VerifyKey::verify(std::string_view data, std::string_view signature) const {
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  const EVP_MD* md = is_ed25519(key_.get()) ? nullptr : EVP_sha256();
  const bool ok = ctx && EVP_DigestVerifyInit(ctx.get(), nullptr, md, nullptr, key_.get()) == 1 &&
                  EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()),
                                   signature.size(), reinterpret_cast<const unsigned char*>(data.data()),
                                   data.size()) == 1;
  // A failed verify leaves entries on this thread's error queue.
  ERR_clear_error();
  return ok;
}

std::vector<VerifyKey> load_verify_keys(const std::vector<std::string>& paths) {
  std::vector<VerifyKey> keys;
  for (const auto& path : paths) {
    const std::string pem = net::read_pem_file(path, "public key file");
    static constexpr std::string_view kBegin = "-----BEGIN PUBLIC KEY-----";
    std::size_t found = 0;
    for (auto at = pem.find(kBegin); at != std::string::npos; at = pem.find(kBegin, at + kBegin.size())) {
      keys.push_back(VerifyKey::from_pem(std::string_view(pem).substr(at), "public key file '" + path + "'"));
      ++found;
    }
    if (found == 0) {
      throw std::runtime_error("public key file '" + path + "' holds no PEM public key (\"" + std::string(kBegin) +
                               "\")");
    }
  }
  return keys;
}

}  // namespace postern::crypto
