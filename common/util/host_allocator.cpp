#include "common/util/host_allocator.h"

#include <cstdlib>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace rx {
namespace {
std::string& policy() {
  static std::string p = "default";
  return p;
}

std::string apply_policy() {
#if defined(__GLIBC__)
  for (const char* name : {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_"})
    if (std::getenv(name)) return "environment";
  // 32 MiB is glibc's largest mmap threshold on 64-bit (HEAP_MAX_SIZE / 2); blocks above it still get
  // their own mapping. The trim threshold is an int: its largest value means "never".
  const bool ok = mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 && mallopt(M_TRIM_THRESHOLD, 0x7fffffff) == 1;
  return ok ? "keep_freed (mmap_threshold 32 MiB, no trim)" : "default";
#else
  return "default";
#endif
}
}  // namespace

std::string keep_freed_host_memory() { return policy() = apply_policy(); }

std::string host_allocator_policy() { return policy(); }

}  // namespace rx
