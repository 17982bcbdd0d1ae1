#pragma once
// Basic credentials are checked against slow, salted hashes (PBKDF2, about
// 0.4 s each on purpose). This runs those checks on a thread of its own so
// the service's thread never waits for one, and bounds how many may wait:
// beyond that, identify() answers 503 with Retry-After, and a flood of
// guesses costs the service one core at most rather than all of its time.

#include <cstddef>
#include <memory>

#include "common/asio.hpp"
#include "common/policy/catalog.hpp"
#include "postern/tunnel/v1/tunnel.pb.h"

namespace postern::policy {

class BasicVerifier {
 public:
  /// At most this many checks queued or running at once.
  static constexpr std::size_t kMaxPending = 16;

  BasicVerifier();
  ~BasicVerifier();

  /// Before identify(): checks the Basic credentials `head` carries for
  /// `api`, unless `catalog` has their result already or kMaxPending checks
  /// wait. Resumes on the caller's executor. Call from one thread.
  /// (`catalog` by reference: callers pass a named one, which outlives the
  /// await.)
  asio::awaitable<void> prepare(const std::shared_ptr<const Catalog>& catalog, const CompiledApi& api,
                                const tunnel::v1::RequestHead& head);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace postern::policy
