#pragma once
// Byte-level helpers the policy checks share: gzip, base64, SHA-256, UTF-8.
// All functions are pure and thread-safe.

#include <cstddef>
#include <string>
#include <string_view>

namespace postern::policy {

/// gzip (RFC 1952) of `data` via zlib (deflateInit2 with windowBits 15+16).
/// Throws std::runtime_error on zlib failure.
std::string gzip_compress(std::string_view data);

/// Inverse; throws std::runtime_error on corrupt or truncated input (including
/// empty input and trailing bytes that are not another gzip member).
/// Concatenated members are decompressed one after another, as gzip(1) does.
/// Output bounded by `max_out` bytes (throws std::runtime_error if larger), so
/// a small bomb cannot make it allocate much more than that.
std::string gzip_decompress(std::string_view data, std::size_t max_out = 64u << 20);

/// Standard base64 with padding (OpenSSL EVP_EncodeBlock).
std::string base64_encode(std::string_view data);

/// Decodes standard padded base64 and rejects bad input with
/// std::invalid_argument: length not a multiple of 4, characters outside the
/// alphabet (whitespace included), misplaced padding, or non-zero unused bits
/// in the last group (so every byte string has exactly one accepted encoding).
std::string base64_decode(std::string_view text);

/// Lower-case hex SHA-256 (OpenSSL EVP).
std::string sha256_hex(std::string_view data);

/// True if `text` is 64 lower- or upper-case hex digits.
bool is_sha256_hex(std::string_view text);

/// Compares in time independent of where the inputs differ (CRYPTO_memcmp);
/// different lengths → false (the length itself is not hidden).
bool constant_time_equal(std::string_view a, std::string_view b);

/// True if `data` is valid UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF).
bool is_utf8(std::string_view data);

}  // namespace postern::policy
