#include "common/crypto/random.hpp"

#include <openssl/rand.h>

#include <stdexcept>

namespace postern::crypto {

std::string random_bytes(std::size_t bytes) {
  std::string out(bytes, '\0');
  if (bytes > 0 && RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(bytes)) != 1) {
    throw std::runtime_error("the random number generator failed (RAND_bytes)");
  }
  return out;
}

std::string random_hex(std::size_t bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  const std::string raw = random_bytes(bytes);
  std::string out;
  out.reserve(2 * bytes);
  for (unsigned char c : raw) {
    out += kHex[c >> 4];
    out += kHex[c & 15];
  }
  return out;
}

}  // namespace postern::crypto
