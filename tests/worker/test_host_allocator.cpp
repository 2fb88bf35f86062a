// [Host allocator] (common/util/host_allocator.h): after keep_freed_host_memory(), activation-sized
// blocks come from the heap, not from their own mmap(), and the heap is not trimmed when they are
// freed; blocks above the 32 MiB ceiling still get a mapping; the user's MALLOC_* settings win.
#include <gtest/gtest.h>
#include <malloc.h>

#include <cstdlib>
#include <cstring>

#include "common/util/host_allocator.h"

namespace {
// Allocates and touches n bytes where the compiler cannot elide it.
void* touched(size_t n) {
  void* p = std::malloc(n);
  std::memset(p, 1, n);
  asm volatile("" : : "r"(p) : "memory");
  return p;
}

TEST(HostAllocator, ActivationBlocksStayMappedBetweenSteps) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "AddressSanitizer replaces malloc: mallopt has no effect under it";
#endif
  for (const char* name :
       {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES"})
    unsetenv(name);
  const std::string policy = rx::keep_freed_host_memory();
  ASSERT_EQ(policy.rfind("keep_freed", 0), 0u) << policy;
  EXPECT_EQ(rx::host_allocator_policy(), policy);

  // A 20 MiB activation: glibc's default (128 KiB threshold) would mmap it.
  const size_t mapped_before = mallinfo2().hblkhd;
  void* block = touched(20u << 20);
  EXPECT_EQ(mallinfo2().hblkhd, mapped_before) << "the block got its own mapping";
  const size_t heap_with_block = mallinfo2().arena;
  std::free(block);
  EXPECT_EQ(mallinfo2().arena, heap_with_block) << "the heap was trimmed after the free";

  // Above the ceiling a block is still mapped (and unmapped on free): memory is not held forever.
  void* big = touched(40u << 20);
  EXPECT_GE(mallinfo2().hblkhd, mapped_before + (40u << 20));
  std::free(big);
  EXPECT_EQ(mallinfo2().hblkhd, mapped_before);
}

TEST(HostAllocator, TheUsersMallocSettingsWin) {
  setenv("MALLOC_TRIM_THRESHOLD_", "1048576", 1);
  EXPECT_EQ(rx::keep_freed_host_memory(), "environment");
  EXPECT_EQ(rx::host_allocator_policy(), "environment");
  unsetenv("MALLOC_TRIM_THRESHOLD_");
  setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=1048576", 1);
  EXPECT_EQ(rx::keep_freed_host_memory(), "environment");
  unsetenv("GLIBC_TUNABLES");
}
}  // namespace
