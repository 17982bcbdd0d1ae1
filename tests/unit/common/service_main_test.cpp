#include "common/service_main.hpp"

#include <gtest/gtest.h>
#include <malloc.h>

#include <sys/wait.h>

#include <barrier>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

namespace postern {
namespace {

// glibc marks a chunk it mmapped in the size word just before the block.
bool mmapped(const void* p) {
  std::size_t size_word;
  std::memcpy(&size_word, reinterpret_cast<const void*>(reinterpret_cast<std::uintptr_t>(p) - sizeof size_word),
              sizeof size_word);
  return (size_word & 0x2) != 0;
}

// Why glibc's own malloc is not the one under test here, or "" when it is.
const char* not_glibc_malloc() {
#if defined(__SANITIZE_ADDRESS__)
  return "AddressSanitizer has its own allocator";
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
  return "AddressSanitizer has its own allocator";
#endif
#endif
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  if (tunables && std::strstr(tunables, "glibc.malloc.")) return "GLIBC_TUNABLES sets malloc options";
  return "";
}

// Starts 8 threads that each allocate while all are alive, then exits with
// the number of heaps (arenas) glibc's malloc_info reports.
[[noreturn]] void exit_with_heap_count(bool tuned) {
  if (tuned) tune_malloc();
  constexpr int kThreads = 8;
  std::barrier all_allocated(kThreads + 1);
  std::barrier counted(kThreads + 1);
  std::vector<void*> blocks(kThreads);  // kept, else the compiler drops malloc and free
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      blocks[i] = std::malloc(200);
      all_allocated.arrive_and_wait();
      counted.arrive_and_wait();
    });
  }
  all_allocated.arrive_and_wait();
  char* xml = nullptr;
  std::size_t size = 0;
  FILE* out = open_memstream(&xml, &size);
  malloc_info(0, out);
  std::fclose(out);
  int heaps = 0;
  for (const char* at = xml; (at = std::strstr(at, "<heap nr=")) != nullptr; ++at) ++heaps;
  std::free(xml);
  counted.arrive_and_wait();
  for (auto& t : threads) t.join();
  for (void* b : blocks) std::free(b);
  std::_Exit(heaps);
}

// A 256 KiB body piece comes from the heap once tune_malloc() ran: glibc
// would otherwise mmap it (the default threshold is 128 KiB) and fault it in
// page by page, once per piece (the connector spent a core on that in a
// 1 GiB download). A block freed and asked for again is the same one.
TEST(TuneMalloc, BodyPiecesComeFromTheHeapAndAreUsedAgain) {
  if (const char* why = not_glibc_malloc(); *why) GTEST_SKIP() << why;
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

// Every thread allocates from one heap once tune_malloc() ran. With glibc's
// default each thread alive at once gets a heap of its own, kept at its
// high-water mark: the broker's RSS rose in steps through a soak as gRPC
// started threads under load. Each case runs in a fresh process (a death
// test re-executes this binary), since glibc fixes its heap limit once.
TEST(TuneMalloc, ThreadsShareOneHeap) {
  if (const char* why = not_glibc_malloc(); *why) GTEST_SKIP() << why;
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(exit_with_heap_count(true), testing::ExitedWithCode(1), "");
  // The control: untuned, the same threads spread over several heaps.
  EXPECT_EXIT(exit_with_heap_count(false), [](int status) { return WIFEXITED(status) && WEXITSTATUS(status) > 1; },
              "");
}

}  // namespace
}  // namespace postern
