#pragma once
// Unpredictable bytes from OpenSSL's CSPRNG, for identifiers an attacker must
// not guess (session tokens, salts). Thread-safe.

#include <cstddef>
#include <string>

namespace postern::crypto {

/// `bytes` random bytes (RAND_bytes). Throws std::runtime_error if the
/// generator fails (never silently weaker).
std::string random_bytes(std::size_t bytes);

/// The same, as 2 * `bytes` lower-case hex digits.
std::string random_hex(std::size_t bytes);

}  // namespace postern::crypto
