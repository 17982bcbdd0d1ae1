#include "common/service_main.hpp"

#include <gtest/gtest.h>
#include <malloc.h>

#include <cstdlib>
#include <cstring>

namespace postern {
namespace {

// glibc marks a chunk it mmapped in the size word just before the block.
bool mmapped(const void* p) { return (static_cast<const std::size_t*>(p)[-1] & 0x2) != 0; }

// A 256 KiB body piece comes from the heap once tune_malloc() ran: glibc
// would otherwise mmap it (the default threshold is 128 KiB) and fault it in
// page by page, once per piece (the connector spent a core on that in a
// 1 GiB download). A block freed and asked for again is the same one.
TEST(TuneMalloc, BodyPiecesComeFromTheHeapAndAreUsedAgain) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "AddressSanitizer has its own allocator";
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
  GTEST_SKIP() << "AddressSanitizer has its own allocator";
#endif
#endif
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  if (tunables && std::strstr(tunables, "glibc.malloc.")) GTEST_SKIP() << "GLIBC_TUNABLES sets malloc options";
  tune_malloc();
  constexpr std::size_t kPiece = 256 * 1024;
  void* a = std::malloc(kPiece);
  ASSERT_NE(a, nullptr);
  EXPECT_FALSE(mmapped(a));
  std::memset(a, 1, kPiece);
  std::free(a);
  void* b = std::malloc(kPiece);
  EXPECT_FALSE(mmapped(b));
  // Pieces in flight and then freed stay with the heap (8 MiB trim
  // threshold, not 128 KiB): the next ones use that memory again.
  void* more[4];
  for (auto*& m : more) m = std::malloc(kPiece);
  for (auto* m : more) EXPECT_FALSE(mmapped(m));
  for (auto* m : more) std::free(m);
  std::free(b);
  EXPECT_GE(mallinfo2().keepcost, 4 * kPiece);
}

}  // namespace
}  // namespace postern
