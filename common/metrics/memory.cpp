#include "common/metrics/memory.h"

#include <sys/resource.h>

#ifdef RX_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace rx::metrics {

int64_t peak_rss_bytes() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<int64_t>(ru.ru_maxrss) * 1024;  // Linux reports KiB
}

DeviceMemory cuda_peak_memory([[maybe_unused]] int device) {
  DeviceMemory m;
#ifdef RX_WITH_CUDA
  // A CPU run of a CUDA build (no GPU on the node, or training.device cpu) has no allocator to ask.
  if (device < 0 || device >= static_cast<int>(c10::cuda::device_count())) return m;
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device);
  const auto all = static_cast<size_t>(c10::CachingDeviceAllocator::StatType::AGGREGATE);
  m.peak_allocated = stats.allocated_bytes[all].peak;
  m.peak_reserved = stats.reserved_bytes[all].peak;
#endif
  return m;
}

}  // namespace rx::metrics
