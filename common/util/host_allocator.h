#pragma once
// [Host allocator] A training step frees and re-allocates the same activation-sized blocks (MBs each)
// every step. glibc serves blocks above its mmap threshold with fresh mmap()s and returns them with
// munmap(), so each step pays a page fault per 4 KiB of every activation it writes: for
// resnext20_tiny on Fashion-MNIST (batch 64, one core per rank) that is ~7% of the step. Raising the
// mmap threshold to its 32 MiB ceiling and never trimming the heap keeps those pages mapped between
// steps; the resident size stays at the peak the run record reports anyway.
#include <string>

namespace rx {

// Applies the policy above unless the user set glibc's own MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_
// (or MALLOC_TOP_PAD_, or a glibc.malloc.* entry of GLIBC_TUNABLES), which then win. Call once, before the
// first large allocation. Returns what is in force, for the run record: "keep_freed (mmap_threshold 32 MiB,
// no trim)", "environment" or "default" (not glibc).
std::string keep_freed_host_memory();

// What keep_freed_host_memory() last returned in this process; "default" before any call.
std::string host_allocator_policy();

}  // namespace rx
