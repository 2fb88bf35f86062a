#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>

namespace rx::metrics {

// Peak resident set size of this process, in bytes (getrusage).
int64_t peak_rss_bytes();

struct DeviceMemory {
  int64_t peak_allocated = 0;  // CUDA caching allocator, bytes
  int64_t peak_reserved = 0;
};
// The CUDA allocator's peaks for `device` in a CUDA build; zeros on CPU builds and for a device
// that is not there (e.g. -1 for a CPU run).
DeviceMemory cuda_peak_memory(int device);

}  // namespace rx::metrics
