#include "common/crypto/password.hpp"

#include <openssl/evp.h>

#include <charconv>
#include <stdexcept>
#include <vector>

#include "common/crypto/random.hpp"
#include "common/policy/codec.hpp"

namespace postern::crypto {

namespace {

constexpr std::string_view kScheme = "$pbkdf2-sha256$i=";
constexpr std::size_t kSaltBytes = 16;
constexpr std::size_t kHashBytes = 32;

std::string b64_nopad(std::string_view data) {
  std::string s = policy::base64_encode(data);
  while (!s.empty() && s.back() == '=') s.pop_back();
  return s;
}

std::optional<std::string> b64_decode_nopad(std::string_view text) {
  std::string padded(text);
  while (padded.size() % 4 != 0) padded += '=';
  try {
    return policy::base64_decode(padded);
  } catch (const std::invalid_argument&) {
    return std::nullopt;
  }
}

std::string pbkdf2(std::string_view password, std::string_view salt, std::uint32_t iterations) {
  std::string out(kHashBytes, '\0');
  if (PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()),
                        reinterpret_cast<const unsigned char*>(salt.data()), static_cast<int>(salt.size()),
                        static_cast<int>(iterations), EVP_sha256(), static_cast<int>(out.size()),
                        reinterpret_cast<unsigned char*>(out.data())) != 1) {
    throw std::runtime_error("PBKDF2 failed");
  }
  return out;
}

struct Parsed {
  std::uint32_t iterations = 0;
  std::string salt, hash;
};

// Parses `stored`; the error names what is wrong.
std::optional<Parsed> parse(std::string_view stored, std::string* error) {
  auto fail = [&](std::string why) -> std::optional<Parsed> {
    if (error) *error = std::move(why);
    return std::nullopt;
  };
  if (!stored.starts_with(kScheme)) {
    return fail("expected a PBKDF2 hash \"$pbkdf2-sha256$i=N$SALT$HASH\" (make one with `postern-policy "
                "hash-password`)");
  }
  std::string_view rest = stored.substr(kScheme.size());
  const auto d1 = rest.find('$');
  const auto d2 = d1 == std::string_view::npos ? d1 : rest.find('$', d1 + 1);
  if (d2 == std::string_view::npos || rest.find('$', d2 + 1) != std::string_view::npos) {
    return fail("expected \"$pbkdf2-sha256$i=N$SALT$HASH\"");
  }
  Parsed p;
  const std::string_view iter = rest.substr(0, d1);
  auto [end, ec] = std::from_chars(iter.data(), iter.data() + iter.size(), p.iterations);
  if (ec != std::errc() || end != iter.data() + iter.size()) return fail("iteration count '" + std::string(iter) + "' is not a number");
  if (p.iterations < kMinPasswordIterations || p.iterations > kMaxPasswordIterations) {
    return fail("iteration count " + std::to_string(p.iterations) + " is outside " +
                std::to_string(kMinPasswordIterations) + ".." + std::to_string(kMaxPasswordIterations));
  }
  auto salt = b64_decode_nopad(rest.substr(d1 + 1, d2 - d1 - 1));
  auto hash = b64_decode_nopad(rest.substr(d2 + 1));
  if (!salt || salt->size() < 8) return fail("the salt is not base64 of at least 8 bytes");
  if (!hash || hash->size() != kHashBytes) return fail("the hash is not base64 of 32 bytes");
  p.salt = std::move(*salt);
  p.hash = std::move(*hash);
  return p;
}

}  // namespace

std::string hash_password(std::string_view password, std::uint32_t iterations) {
  if (iterations < kMinPasswordIterations || iterations > kMaxPasswordIterations) {
    throw std::invalid_argument("iterations must be within " + std::to_string(kMinPasswordIterations) + ".." +
                                std::to_string(kMaxPasswordIterations));
  }
  const std::string salt = random_bytes(kSaltBytes);
  return std::string(kScheme) + std::to_string(iterations) + "$" + b64_nopad(salt) + "$" +
         b64_nopad(pbkdf2(password, salt, iterations));
}

std::optional<std::string> password_hash_problem(std::string_view stored) {
  std::string error;
  if (!parse(stored, &error)) return error;
  return std::nullopt;
}

bool verify_password(std::string_view password, std::string_view stored) {
  auto p = parse(stored, nullptr);
  if (!p) return false;
  return policy::constant_time_equal(pbkdf2(password, p->salt, p->iterations), p->hash);
}

}  // namespace postern::crypto
