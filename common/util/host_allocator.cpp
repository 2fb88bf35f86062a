#include "common/util/host_allocator.h"

#include <cstdlib>
#include <cstring>

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
  if (const char* tunables = std::getenv("GLIBC_TUNABLES");
      tunables && std::strstr(tunables, "glibc.malloc."))
    return "environment";
  // 32 MiB is glibc's largest mmap threshold on 64-bit (HEAP_MAX_SIZE / 2); blocks above it still get
  // their own mapping. A trim threshold of -1 turns trimming off (mallopt(3)).
  const bool ok = mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 && mallopt(M_TRIM_THRESHOLD, -1) == 1;
  return ok ? "keep_freed (mmap_threshold 32 MiB, no trim)" : "default";
#else
  return "default";
#endif
}
}  // namespace

std::string keep_freed_host_memory() { return policy() = apply_policy(); }

std::string host_allocator_policy() { return policy(); }

}  // namespace rx
