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
// Zeros on CPU builds; the CUDA allocator's peaks for `device` in a CUDA build.
DeviceMemory cuda_peak_memory(int device);

}  // namespace rx::metrics
