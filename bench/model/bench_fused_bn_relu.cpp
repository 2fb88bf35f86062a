// [Fused BN-ReLU] against LibTorch's BatchNorm2d + add + ReLU: forward and backward milliseconds of one
// call, in training mode, channels-last float32 on one thread, the two variants alternating so machine
// load hits both alike. Not a test; see bench/README.md ("### Time to 92%").
//
//   bench_fused_bn_relu [--batch N] [--channels C] [--size HW] [--residual] [--iters K] [--rounds R]
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>

#include "common/model/fused_bn_relu.h"
#include "common/util/args.h"
#include "common/util/error.h"
#include "common/util/host_allocator.h"

namespace {
double seconds_now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

int main(int argc, char** argv) try {
  const rx::Args a({argv + 1, argv + argc}, {"batch", "channels", "size", "iters", "rounds"}, {"residual"});
  if (!a.positionals().empty()) throw rx::UsageError("unexpected argument '" + a.positionals()[0] + "'");
  const int64_t n = a.get_int64("batch", 64, 1, 1 << 16), c = a.get_int64("channels", 64, 1, 1 << 16);
  const int64_t hw = a.get_int64("size", 28, 1, 1 << 12);
  const int iters = a.get_int("iters", 25, 1, 100000), rounds = a.get_int("rounds", 2, 1, 1000);
  const bool residual = a.has("residual");
  const std::string allocator = rx::keep_freed_host_memory();  // as resnext_worker train runs
  at::set_num_threads(1);
  const auto cl = torch::MemoryFormat::ChannelsLast;
  auto x = torch::randn({n, c, hw, hw}).contiguous(cl).requires_grad_(true);
  auto r = torch::randn({n, c, hw, hw}).contiguous(cl).requires_grad_(true);
  auto dy = torch::randn({n, c, hw, hw}).contiguous(cl);
  std::printf(
      "# [%lld, %lld, %lld, %lld] channels-last float32, %s, 1 thread, %d timed calls after 5 warm-up, "
      "host allocator %s\n",
      static_cast<long long>(n), static_cast<long long>(c), static_cast<long long>(hw),
      static_cast<long long>(hw), residual ? "relu(bn(x) + residual)" : "relu(bn(x))", iters,
      allocator.c_str());
  std::printf("%-6s %-9s %12s %12s\n", "round", "variant", "forward ms", "backward ms");
  for (int round = 1; round <= rounds; ++round) {
    for (bool fused : {false, true}) {
      torch::nn::BatchNorm2d bn(c);
      double fwd = 0, bwd = 0;
      for (int i = 0; i < iters + 5; ++i) {
        const double t0 = seconds_now();
        auto y = rx::model::bn_relu(x, *bn, residual ? r : torch::Tensor(), fused);
        const double t1 = seconds_now();
        y.backward(dy);
        const double t2 = seconds_now();
        if (i >= 5) fwd += t1 - t0, bwd += t2 - t1;
      }
      std::printf("%-6d %-9s %12.2f %12.2f\n", round, fused ? "fused" : "libtorch", fwd / iters * 1e3,
                  bwd / iters * 1e3);
    }
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_fused_bn_relu: %s\n", e.what());
  return 2;
}
