#pragma once
// Stored password hashes for Basic credentials: PBKDF2-HMAC-SHA256 with a
// random salt, its parameters inside the stored string (PHC string format):
//
//   $pbkdf2-sha256$i=600000$<salt>$<hash>     (salt and hash: base64, no padding)
//
// A stolen policy file or snapshot then yields no password without a
// brute-force search at 600,000 HMACs per guess. Pure and thread-safe.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace postern::crypto {

/// OWASP's figure for PBKDF2-HMAC-SHA256 (2023).
inline constexpr std::uint32_t kPasswordIterations = 600'000;
/// Bounds a stored string may name: fewer is too weak to accept, more is a
/// denial of service waiting in a config file.
inline constexpr std::uint32_t kMinPasswordIterations = 100'000;
inline constexpr std::uint32_t kMaxPasswordIterations = 10'000'000;

/// A new stored hash of `password`, with a fresh 16-byte salt.
std::string hash_password(std::string_view password, std::uint32_t iterations = kPasswordIterations);

/// What is wrong with `stored` as a stored hash, or nullopt if it is one.
std::optional<std::string> password_hash_problem(std::string_view stored);

/// True if `password` matches `stored` (compared in constant time). False
/// for a malformed `stored`.
bool verify_password(std::string_view password, std::string_view stored);

}  // namespace postern::crypto
