#pragma once
// Shared by the GPU tests: one skip rule. A test that needs `gpus` devices skips, printing
// "SKIPPED: no CUDA ..." (CTest's SKIP_REGULAR_EXPRESSION for label gpu) and the reason, in a CPU
// build, where no GPU is visible, or where fewer than `gpus` are.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>

#include "common/comm/factory.h"

namespace rx::testing {

inline std::string gpu_skip_reason(int gpus = 1) {
  if (!comm::has_nccl_backend())
    return "SKIPPED: no CUDA in this build (CPU LibTorch; see launch/build_cuda.sh)";
  const int visible = torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0;
  if (visible == 0) return "SKIPPED: no CUDA GPU visible";
  if (visible < gpus)
    return "SKIPPED: no CUDA device for each rank (" + std::to_string(gpus) + " needed, " +
           std::to_string(visible) + " visible)";
  return "";
}

}  // namespace rx::testing

#define RX_REQUIRE_GPUS(n)                                          \
  do {                                                              \
    const std::string rx_skip_ = ::rx::testing::gpu_skip_reason(n); \
    if (!rx_skip_.empty()) GTEST_SKIP() << rx_skip_;                \
  } while (0)
