#pragma once
// Incremental SHA-256 over OpenSSL EVP, for digests of streamed bodies.

#include <cstddef>
#include <string>

struct evp_md_ctx_st;

namespace postern::demo {

/// Incremental SHA-256: update() any number of times, then hex() once.
/// Not thread-safe; one per body. Throws std::runtime_error if OpenSSL fails.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void update(const void* data, std::size_t size);
  /// Finishes the digest and returns it as 64 lowercase hex digits.
  std::string hex();

 private:
  evp_md_ctx_st* ctx_;
};

}  // namespace postern::demo
