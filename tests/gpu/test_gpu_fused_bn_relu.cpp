// [Fused BN-ReLU] on CUDA (bn_relu_cuda.cu) against an oracle: LibTorch's own BatchNorm2d, add and
// ReLU in float32 on the same GPU, fed the same values (16-bit inputs upcast exactly). Forward output,
// dx, the residual's gradient, dweight, dbias and the running statistics, in float32, bf16 and fp16,
// with and without a residual, over shapes that exercise the launch geometry: few channels (one channel
// vector per row), many (several tiles), rows that are not a multiple of anything, a row count large
// enough for every row chunk to take several unrolled steps, and a mean far from zero (the pivot).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <iostream>
#include <string>
#include <vector>

#include "common/model/fused_bn_relu.h"
#include "tests/gpu/gpu_test_util.h"

using namespace rx;

namespace {

struct Case {
  int64_t n, c, h, w;
  double mean;  // of x: far from zero tests the moments' pivot
};

// Not two rows per channel: there every normalised value is +-1 and dx is pure cancellation (a float
// rounding residue on both sides; measured 1.4e-3 relative to its own tiny largest entry on an H200).
const Case kCases[] = {{8, 64, 16, 16, 0.0},    {3, 24, 5, 7, 3.0}, {16, 2048, 4, 4, 0.0},
                       {128, 256, 32, 32, 1.0}, {2, 8, 3, 1, -2.0}, {5, 512, 9, 9, 20.0}};

torch::nn::BatchNorm2d make_bn(int64_t c, torch::Device device, int seed) {
  torch::manual_seed(seed);
  torch::nn::BatchNorm2d bn(torch::nn::BatchNorm2dOptions(c).momentum(0.1).eps(1e-5));
  torch::NoGradGuard no_grad;
  bn->weight.uniform_(0.5, 1.5);
  bn->bias.uniform_(-0.5, 0.5);
  bn->running_mean.uniform_(-1, 1);
  bn->running_var.uniform_(0.5, 2);
  bn->to(device);
  return bn;
}

// Largest |a - b| over the largest |b|, in double on the CPU.
double rel_diff(const torch::Tensor& a, const torch::Tensor& b) {
  const auto x = a.detach().to(torch::kCPU, torch::kDouble), y = b.detach().to(torch::kCPU, torch::kDouble);
  return (x - y).abs().max().item<double>() / std::max(y.abs().max().item<double>(), 1e-12);
}

struct Result {
  torch::Tensor y, dx, dr, dweight, dbias, running_mean, running_var;
};

// One training forward and backward of relu(bn(x) [+ r]) with upstream gradient dy.
Result train_step(const torch::Tensor& x0, const torch::Tensor& r0, const torch::Tensor& dy,
                  torch::nn::BatchNorm2d& bn, bool fused) {
  torch::Tensor x = x0.detach().clone(at::MemoryFormat::ChannelsLast).requires_grad_(true);
  torch::Tensor r =
      r0.defined() ? r0.detach().clone(at::MemoryFormat::ChannelsLast).requires_grad_(true) : r0;
  bn->train();
  for (auto& p : bn->parameters()) p.mutable_grad() = torch::Tensor();
  torch::Tensor y = model::bn_relu(x, *bn, r, fused);
  y.backward(dy);
  return {y.detach(),
          x.grad(),
          r.defined() ? r.grad() : torch::Tensor(),
          bn->weight.grad(),
          bn->bias.grad(),
          bn->running_mean.clone(),
          bn->running_var.clone()};
}

// Where the pre-activation is within rounding of zero, the fused kernels and the modules may disagree
// on the ReLU's mask (a different order of float operations); no incoming gradient there keeps the
// comparison about arithmetic, not ties. The pre-activation from the batch statistics, in double.
torch::Tensor masked_at_ties(torch::Tensor dy, const torch::Tensor& x, const torch::Tensor& r,
                             const torch::nn::BatchNorm2dImpl& bn) {
  const auto xd = x.to(torch::kFloat64);
  const auto mean = xd.mean({0, 2, 3}, true);
  const auto var = xd.var({0, 2, 3}, /*unbiased=*/false, true);
  const auto w = bn.weight.detach().to(torch::kFloat64).view({1, -1, 1, 1});
  const auto b = bn.bias.detach().to(torch::kFloat64).view({1, -1, 1, 1});
  auto z = (xd - mean) / (var + bn.options.eps()).sqrt() * w + b;
  if (r.defined()) z = z + r.to(torch::kFloat64);
  return dy.masked_fill_(z.abs().lt(1e-3), 0.0);
}

std::string name_of(torch::ScalarType t) { return std::string(c10::toString(t)); }

}  // namespace

// The fused kernels against LibTorch's modules in float32 on the same inputs. Bounds: 1e-4 relative in
// float32 (sums in a different order); in 16-bit types the outputs and dx are rounded once to the
// type (2^-8 for bf16), so 1e-2, while dweight, dbias and the statistics are computed in float32 from
// exact inputs and keep 1e-4 (the ReLU mask is computed in float32 on both sides).
TEST(GpuFusedBnRelu, MatchesLibTorchModules) {
  RX_REQUIRE_GPUS(1);
  const torch::Device gpu(torch::kCUDA, 0);
  for (const auto dtype : {torch::kFloat32, torch::kBFloat16, torch::kHalf}) {
    for (const auto& k : kCases) {
      for (const bool residual : {false, true}) {
        SCOPED_TRACE(name_of(dtype) + " " + std::to_string(k.n) + "x" + std::to_string(k.c) + "x" +
                     std::to_string(k.h) + "x" + std::to_string(k.w) + (residual ? " residual" : ""));
        torch::manual_seed(static_cast<uint64_t>(k.c * 131 + k.h + residual));
        const auto opts = torch::TensorOptions().device(gpu).dtype(dtype);
        const auto x = (torch::randn({k.n, k.c, k.h, k.w}) * 2 + k.mean)
                           .to(opts)
                           .contiguous(at::MemoryFormat::ChannelsLast);
        const auto r =
            residual ? torch::randn({k.n, k.c, k.h, k.w}).to(opts).contiguous(at::MemoryFormat::ChannelsLast)
                     : torch::Tensor();
        auto bn_fused = make_bn(k.c, gpu, 3), bn_ref = make_bn(k.c, gpu, 3);
        const auto dy = masked_at_ties(torch::randn({k.n, k.c, k.h, k.w}).to(opts), x, r, *bn_ref)
                            .contiguous(at::MemoryFormat::ChannelsLast);
        ASSERT_TRUE(model::fused_bn_relu_applies(x, *bn_fused, r))
            << "the fused kernels do not take this case";
        const Result got = train_step(x, r, dy, bn_fused, true);
        const Result want = train_step(x.to(torch::kFloat32), r.defined() ? r.to(torch::kFloat32) : r,
                                       dy.to(torch::kFloat32), bn_ref, false);
        ASSERT_EQ(got.y.scalar_type(), dtype);
        ASSERT_EQ(got.dx.scalar_type(), dtype);
        EXPECT_TRUE(got.y.is_contiguous(at::MemoryFormat::ChannelsLast));
        const double act = dtype == torch::kFloat32 ? 1e-4 : 1e-2, sums = 1e-4;
        EXPECT_LT(rel_diff(got.y, want.y), act);
        EXPECT_LT(rel_diff(got.dx, want.dx), act);
        if (residual) {
          EXPECT_LT(rel_diff(got.dr, want.dr), act);
        }
        EXPECT_LT(rel_diff(got.dweight, want.dweight), sums);
        EXPECT_LT(rel_diff(got.dbias, want.dbias), sums);
        EXPECT_LT(rel_diff(got.running_mean, want.running_mean), 1e-5);
        EXPECT_LT(rel_diff(got.running_var, want.running_var), 1e-5);
        EXPECT_EQ(bn_fused->num_batches_tracked.item<int64_t>(), 1);
        EXPECT_GT(want.dx.abs().max().item<double>(), 0) << "the oracle computed no gradient";
      }
    }
  }
}

// [Deterministic sums]: the same inputs give the same bits, twice.
TEST(GpuFusedBnRelu, RepeatsBitForBit) {
  RX_REQUIRE_GPUS(1);
  const torch::Device gpu(torch::kCUDA, 0);
  const auto opts = torch::TensorOptions().device(gpu).dtype(torch::kBFloat16);
  torch::manual_seed(4);
  const auto x = torch::randn({64, 256, 16, 16}).to(opts).contiguous(at::MemoryFormat::ChannelsLast);
  const auto r = torch::randn({64, 256, 16, 16}).to(opts).contiguous(at::MemoryFormat::ChannelsLast);
  const auto dy = torch::randn({64, 256, 16, 16}).to(opts).contiguous(at::MemoryFormat::ChannelsLast);
  auto a = make_bn(256, gpu, 9), b = make_bn(256, gpu, 9);
  const Result ra = train_step(x, r, dy, a, true), rb = train_step(x, r, dy, b, true);
  for (const auto& [p, q] : std::vector<std::pair<torch::Tensor, torch::Tensor>>{
           {ra.y, rb.y}, {ra.dx, rb.dx}, {ra.dr, rb.dr}, {ra.dweight, rb.dweight}, {ra.dbias, rb.dbias}})
    EXPECT_TRUE(torch::equal(p, q));
}

// Eval mode without gradients: one pass with the running statistics, against the modules.
TEST(GpuFusedBnRelu, EvalMatchesModules) {
  RX_REQUIRE_GPUS(1);
  const torch::Device gpu(torch::kCUDA, 0);
  torch::NoGradGuard no_grad;
  for (const auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    SCOPED_TRACE(name_of(dtype));
    const auto opts = torch::TensorOptions().device(gpu).dtype(dtype);
    const auto x = torch::randn({4, 64, 8, 8}).to(opts).contiguous(at::MemoryFormat::ChannelsLast);
    const auto r = torch::randn({4, 64, 8, 8}).to(opts).contiguous(at::MemoryFormat::ChannelsLast);
    auto bn = make_bn(64, gpu, 5);
    bn->eval();
    ASSERT_TRUE(model::fused_bn_relu_applies(x, *bn, r));
    const auto got = model::bn_relu(x, *bn, r, true);
    const auto want = model::bn_relu(x.to(torch::kFloat32), *bn, r.to(torch::kFloat32), false);
    EXPECT_LT(rel_diff(got, want), dtype == torch::kFloat32 ? 1e-5 : 1e-2);
  }
}

// What the kernels do not take falls back to the modules, with the modules' result: channels that are
// not a whole 16-byte vector, NCHW, a misaligned view, a residual of another dtype.
TEST(GpuFusedBnRelu, UnsupportedInputsRunTheModules) {
  RX_REQUIRE_GPUS(1);
  const torch::Device gpu(torch::kCUDA, 0);
  const auto bf16 = torch::TensorOptions().device(gpu).dtype(torch::kBFloat16);
  auto bn12 = make_bn(12, gpu, 1), bn16 = make_bn(16, gpu, 1);
  const auto odd = torch::randn({2, 12, 4, 4}).to(bf16).contiguous(at::MemoryFormat::ChannelsLast);
  EXPECT_FALSE(model::fused_bn_relu_applies(odd, *bn12, {}));
  const auto nchw = torch::randn({2, 16, 4, 4}).to(bf16);
  EXPECT_FALSE(model::fused_bn_relu_applies(nchw, *bn16, {}));
  const auto base = torch::randn({3, 16, 4, 4}).to(bf16).contiguous(at::MemoryFormat::ChannelsLast);
  const auto shifted = torch::randn({1 + 2 * 16 * 4 * 4}).to(bf16).narrow(0, 1, 2 * 16 * 4 * 4);
  const auto misaligned = shifted.as_strided({2, 16, 4, 4}, {16 * 16, 1, 4 * 16, 16});
  ASSERT_TRUE(misaligned.is_contiguous(at::MemoryFormat::ChannelsLast));
  EXPECT_FALSE(model::fused_bn_relu_applies(misaligned, *bn16, {}));
  const auto x = base.narrow(0, 0, 2);
  EXPECT_TRUE(model::fused_bn_relu_applies(x, *bn16, {}));
  EXPECT_FALSE(model::fused_bn_relu_applies(x, *bn16, x.to(torch::kFloat32)));
  auto a = make_bn(12, gpu, 2), b = make_bn(12, gpu, 2);
  a->train();
  b->train();
  EXPECT_TRUE(torch::equal(model::bn_relu(odd, *a, {}, true), model::bn_relu(odd, *b, {}, false)));
}

// An incoming gradient that is a channels-last view at an odd offset (the output flattened,
// concatenated behind 3 other values and split again by autograd) is not 16-byte aligned: backward
// copies it instead of handing the kernels a misaligned pointer (a sticky CUDA error). fp16 is where
// 3 elements are 6 bytes.
TEST(GpuFusedBnRelu, MisalignedGradientIsCopied) {
  RX_REQUIRE_GPUS(1);
  const torch::Device gpu(torch::kCUDA, 0);
  const auto half = torch::TensorOptions().device(gpu).dtype(torch::kHalf);
  torch::manual_seed(8);
  const auto x = torch::randn({2, 8, 3, 1}).to(half).contiguous(at::MemoryFormat::ChannelsLast);
  auto run = [&](bool fused) {
    auto bn = make_bn(8, gpu, 6);
    bn->train();
    auto xg = x.clone(at::MemoryFormat::ChannelsLast).requires_grad_(true);
    const auto y = model::bn_relu(xg, *bn, {}, fused);
    const auto flat = y.permute({0, 2, 3, 1}).reshape(-1);  // a view: channels-last is NHWC in memory
    const auto z = torch::cat({torch::zeros({3}, half), flat});
    const auto w = torch::linspace(-1, 1, z.numel(), half);
    (z * w).sum().backward();
    return xg.grad();
  };
  ASSERT_TRUE(model::fused_bn_relu_applies(x, *make_bn(8, gpu, 6), {}));
  const auto got = run(true), want = run(false);
  EXPECT_LT(rel_diff(got, want), 1e-2);
  EXPECT_GT(want.abs().max().item<double>(), 0);
}
