#include "common/model/fused_bn_relu.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/model/bn_relu_autograd.h"
#include "common/model/fused_bn_relu_cuda.h"

namespace rx::model {
namespace {
using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

// Activations are [rows, C] row-major in channels-last: one row per (n, h, w). Rows are split into a
// fixed number of chunks that depends only on the thread count and the size, and per-chunk sums are
// added in chunk order, so a step's result does not depend on thread scheduling.
int64_t chunk_count(int64_t rows) {
  return std::clamp<int64_t>(rows / 512, 1, std::max(1, at::get_num_threads()));
}

template <class F>
void for_chunks(int64_t rows, int64_t parts, const F& f) {
  at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) f(p, rows * p / parts, rows * (p + 1) / parts);
  });
}

// Sums are taken in float over blocks of this many rows, then added into double: the inner loop over
// channels stays a plain float loop the compiler vectorises, and the error stays that of 64 terms.
constexpr int64_t kBlockRows = 64;

// Two per-channel sums over rows, where `block(r, e, a, b)` adds rows [r, e) into the float arrays a
// and b (C each). Returns [2 * C] doubles: the sums into a, then into b.
template <class Block>
std::vector<double> channel_sums(int64_t rows, int64_t C, const Block& block) {
  const int64_t parts = chunk_count(rows);
  std::vector<double> partial(static_cast<size_t>(parts * 2 * C), 0.0);
  for_chunks(rows, parts, [&](int64_t p, int64_t r0, int64_t r1) {
    std::vector<float> acc(static_cast<size_t>(2 * C));
    double* out = partial.data() + p * 2 * C;
    for (int64_t r = r0; r < r1; r += kBlockRows) {
      std::fill(acc.begin(), acc.end(), 0.f);
      block(r, std::min(r1, r + kBlockRows), acc.data(), acc.data() + C);
      for (int64_t c = 0; c < 2 * C; ++c) out[c] += acc[c];
    }
  });
  std::vector<double> total(static_cast<size_t>(2 * C), 0.0);
  for (int64_t p = 0; p < parts; ++p)
    for (int64_t c = 0; c < 2 * C; ++c) total[c] += partial[p * 2 * C + c];
  return total;
}

// The per-element kernels. Each takes rows [r0, r1) of [rows, C] arrays through restrict pointers and
// keeps the ReLU's mask a select, not a branch, so that GCC vectorises the channel loop (with a branch
// it stays scalar and mispredicts on half the elements: 5x slower than LibTorch in the first version).

// s += x - pivot, q += (x - pivot)^2.
void moments_rows(const float* __restrict x, const float* __restrict pivot, int64_t r0, int64_t r1, int64_t C,
                  float* __restrict s, float* __restrict q) {
  for (int64_t i = r0; i < r1; ++i)
    for (int64_t c = 0; c < C; ++c) {
      const float d = x[i * C + c] - pivot[c];
      s[c] += d;
      q[c] += d * d;
    }
}

// y = relu(x * scale + shift [+ residual]).
void normalize_relu_rows(const float* __restrict x, const float* __restrict residual, float* __restrict y,
                         int64_t r0, int64_t r1, int64_t C, const float* __restrict scale,
                         const float* __restrict shift) {
  for (int64_t i = r0; i < r1; ++i) {
    if (residual) {
      for (int64_t c = 0; c < C; ++c)
        y[i * C + c] = std::max(x[i * C + c] * scale[c] + shift[c] + residual[i * C + c], 0.f);
    } else {
      for (int64_t c = 0; c < C; ++c) y[i * C + c] = std::max(x[i * C + c] * scale[c] + shift[c], 0.f);
    }
  }
}

// The ReLU's gradient mask, recomputed from x (no residual): g = dy where x * scale + shift > 0.
// sg += g, sgx += g * (x - mean).
void grad_sums_rows(const float* __restrict x, const float* __restrict dy, int64_t r0, int64_t r1, int64_t C,
                    const float* __restrict scale, const float* __restrict shift,
                    const float* __restrict mean, float* __restrict sg, float* __restrict sgx) {
  for (int64_t i = r0; i < r1; ++i)
    for (int64_t c = 0; c < C; ++c) {
      const float xv = x[i * C + c], d = dy[i * C + c];  // both loads unconditional: a select, not a branch
      const float g = xv * scale[c] + shift[c] > 0.f ? d : 0.f;
      sg[c] += g;
      sgx[c] += g * (xv - mean[c]);
    }
}

// The same from the saved output (residual): g = dy where y > 0, also written out as the residual's
// gradient.
void grad_sums_rows_from_output(const float* __restrict x, const float* __restrict y,
                                const float* __restrict dy, float* __restrict g_out, int64_t r0, int64_t r1,
                                int64_t C, const float* __restrict mean, float* __restrict sg,
                                float* __restrict sgx) {
  for (int64_t i = r0; i < r1; ++i)
    for (int64_t c = 0; c < C; ++c) {
      const float d = dy[i * C + c];
      const float g = y[i * C + c] > 0.f ? d : 0.f;
      g_out[i * C + c] = g;
      sg[c] += g;
      sgx[c] += g * (x[i * C + c] - mean[c]);
    }
}

// dx = g * a + (x - mean) * b + k, with g recomputed from x and dy (no residual) ...
void grad_input_rows(const float* __restrict x, const float* __restrict dy, float* __restrict dx, int64_t r0,
                     int64_t r1, int64_t C, const float* __restrict scale, const float* __restrict shift,
                     const float* __restrict mean, const float* __restrict a, const float* __restrict b,
                     const float* __restrict k) {
  for (int64_t i = r0; i < r1; ++i)
    for (int64_t c = 0; c < C; ++c) {
      const float xv = x[i * C + c], d = dy[i * C + c];  // both loads unconditional: a select, not a branch
      const float g = xv * scale[c] + shift[c] > 0.f ? d : 0.f;
      dx[i * C + c] = g * a[c] + (xv - mean[c]) * b[c] + k[c];
    }
}

// ... or read from pass 1's output (residual).
void grad_input_rows_from_g(const float* __restrict x, const float* __restrict g, float* __restrict dx,
                            int64_t r0, int64_t r1, int64_t C, const float* __restrict mean,
                            const float* __restrict a, const float* __restrict b, const float* __restrict k) {
  for (int64_t i = r0; i < r1; ++i)
    for (int64_t c = 0; c < C; ++c)
      dx[i * C + c] = g[i * C + c] * a[c] + (x[i * C + c] - mean[c]) * b[c] + k[c];
}

// y = relu(x * scale + shift [+ residual]), all rows.
void normalize_relu(const float* x, const float* residual, float* y, int64_t rows, int64_t C,
                    const float* scale, const float* shift) {
  for_chunks(rows, chunk_count(rows), [&](int64_t, int64_t r0, int64_t r1) {
    normalize_relu_rows(x, residual, y, r0, r1, C, scale, shift);
  });
}

// [Fused BN-ReLU] training mode: batch statistics, running-statistics update, and a backward that
// recomputes the mask (no residual) or reads the saved output (residual), for the two autograd
// functions of bn_relu_autograd.h.
template <bool kResidual>
struct TrainingKernels {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& weight, const Tensor& bias,
                        const Tensor& residual, torch::nn::BatchNorm2dImpl* bn) {
    const int64_t C = x.size(1);
    const int64_t rows = x.numel() / C;
    const float* xp = f32(x);
    // Moments around the first row, so that a large mean does not cancel the variance in float.
    const float* pivot = xp;
    const auto sums = channel_sums(rows, C, [&](int64_t r0, int64_t r1, float* s, float* q) {
      moments_rows(xp, pivot, r0, r1, C, s, q);
    });
    const double eps = bn->options.eps();
    Tensor mean = torch::empty({C}, x.options());
    Tensor invstd = torch::empty({C}, x.options());
    std::vector<double> var(static_cast<size_t>(C));
    for (int64_t c = 0; c < C; ++c) {
      const double m = sums[c] / rows;
      var[c] = std::max(sums[C + c] / rows - m * m, 0.0);
      f32_mut(mean)[c] = static_cast<float>(pivot[c] + m);
      f32_mut(invstd)[c] = static_cast<float>(1.0 / std::sqrt(var[c] + eps));
    }
    {
      // torch::nn::BatchNorm2d's update: momentum-weighted, the unbiased variance.
      torch::NoGradGuard no_grad;
      const double momentum = *bn->options.momentum();
      const double unbias = static_cast<double>(rows) / (rows - 1);  // rows > 1: fused_bn_relu_applies
      Tensor var_t = torch::from_blob(var.data(), {C}, torch::kFloat64).to(torch::kFloat32);
      bn->running_mean.mul_(1 - momentum).add_(mean, momentum);
      bn->running_var.mul_(1 - momentum).add_(var_t, momentum * unbias);
      bn->num_batches_tracked.add_(1);
    }
    auto [scale, shift] = bn_affine(weight, bias, mean, invstd);
    Tensor y = torch::empty_like(x, at::MemoryFormat::ChannelsLast);
    normalize_relu(xp, kResidual ? f32(residual) : nullptr, f32_mut(y), rows, C, f32(scale), f32(shift));
    if constexpr (kResidual)
      ctx->save_for_backward({x, weight, bias, mean, invstd, y});
    else
      ctx->save_for_backward({x, weight, bias, mean, invstd});
    return y;
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    // The kernels write through raw pointers, so their outputs have no graph of their own: refuse a
    // double backward (create_graph, e.g. a gradient penalty) instead of returning zeros for it.
    TORCH_CHECK(!torch::GradMode::is_enabled(),
                "model.fused_bn_relu: double backward (create_graph) is not supported; turn the fusion off");
    const auto saved = ctx->get_saved_variables();
    const Tensor& x = saved[0];
    const Tensor& weight = saved[1];
    const Tensor& mean = saved[3];
    const Tensor& invstd = saved[4];
    const Tensor dy = grads[0].contiguous(at::MemoryFormat::ChannelsLast);
    const int64_t C = x.size(1);
    const int64_t rows = x.numel() / C;
    auto [scale, shift] = bn_affine(weight, saved[2], mean, invstd);
    const float *xp = f32(x), *dyp = f32(dy), *sp = f32(scale), *tp = f32(shift), *mp = f32(mean);

    // Pass 1: g = dy where the output was positive; sums of g and g * (x - mean) per channel. With a
    // residual, g is also the residual's gradient and is written out here.
    Tensor dr;
    float* drp = nullptr;
    const float* yp = nullptr;
    if constexpr (kResidual) {
      dr = torch::empty_like(x, at::MemoryFormat::ChannelsLast);
      drp = f32_mut(dr);
      yp = f32(saved[5]);
    }
    const auto sums = channel_sums(rows, C, [&](int64_t r0, int64_t r1, float* sg, float* sgx) {
      if constexpr (kResidual)
        grad_sums_rows_from_output(xp, yp, dyp, drp, r0, r1, C, mp, sg, sgx);
      else
        grad_sums_rows(xp, dyp, r0, r1, C, sp, tp, mp, sg, sgx);
    });

    // Pass 2: dx = scale * (g - mean(g) - xhat * mean(g * xhat)) = g * a + (x - mean) * b + k per
    // channel. Centring x first matters: x * b and mean * b cancel when the mean is large against the
    // spread (and b, which carries invstd squared, is then large).
    std::vector<float> a(static_cast<size_t>(C)), b(static_cast<size_t>(C)), k(static_cast<size_t>(C));
    Tensor dweight = torch::empty({C}, x.options());
    Tensor dbias = torch::empty({C}, x.options());
    for (int64_t c = 0; c < C; ++c) {
      const double is = f32(invstd)[c];
      const double sg = sums[c], sgx = sums[C + c];
      const double ac = static_cast<double>(sp[c]);
      const double bc = -ac * is * is * sgx / rows;
      a[c] = static_cast<float>(ac);
      b[c] = static_cast<float>(bc);
      k[c] = static_cast<float>(-ac * sg / rows);
      f32_mut(dweight)[c] = static_cast<float>(sgx * is);
      f32_mut(dbias)[c] = static_cast<float>(sg);
    }
    Tensor dx = torch::empty_like(x, at::MemoryFormat::ChannelsLast);
    float* dxp = f32_mut(dx);
    const float *ap = a.data(), *bp = b.data(), *kp = k.data();
    for_chunks(rows, chunk_count(rows), [&](int64_t, int64_t r0, int64_t r1) {
      if constexpr (kResidual)
        grad_input_rows_from_g(xp, drp, dxp, r0, r1, C, mp, ap, bp, kp);
      else
        grad_input_rows(xp, dyp, dxp, r0, r1, C, sp, tp, mp, ap, bp, kp);
    });
    if constexpr (kResidual) return {dx, dweight, dbias, dr, Tensor()};
    return {dx, dweight, dbias, Tensor()};
  }
};

Tensor unfused(const Tensor& x, torch::nn::BatchNorm2dImpl& bn, const Tensor& residual) {
  Tensor y = bn.forward(x);
  return torch::relu(residual.defined() ? y + residual : y);
}
}  // namespace

bool fused_bn_relu_applies(const Tensor& x, const torch::nn::BatchNorm2dImpl& bn, const Tensor& residual) {
  // The layout first: the checks after it read x.size(1).
  if (x.dim() != 4 || !x.is_contiguous(at::MemoryFormat::ChannelsLast) || x.numel() == 0) return false;
  // CPU: float32; CUDA: what the kernels of bn_relu_cuda.cu take (float32, bf16 or fp16 under autocast).
  const bool cpu = x.device().is_cpu();
  if (cpu ? x.scalar_type() != torch::kFloat32 : !cuda_bn_relu_supports(x)) return false;
  const auto& o = bn.options;
  const bool residual_ok =
      !residual.defined() ||
      (residual.sizes() == x.sizes() && residual.scalar_type() == x.scalar_type() &&
       residual.device() == x.device() &&
       (cpu ? residual.is_contiguous(at::MemoryFormat::ChannelsLast) : cuda_bn_relu_supports(residual)));
  const auto on_device_f32 = [&](const Tensor& t) {
    return t.defined() && t.scalar_type() == torch::kFloat32 && t.device() == x.device() && t.is_contiguous();
  };
  const bool bn_ok = o.num_features() == x.size(1) && o.affine() && o.track_running_stats() &&
                     o.momentum().has_value() && on_device_f32(bn.weight) && on_device_f32(bn.bias) &&
                     on_device_f32(bn.running_mean) && on_device_f32(bn.running_var);
  // Eval mode with gradients wanted (e.g. a frozen-statistics fine-tune) has no fused backward. Training
  // on one value per channel is LibTorch's error to raise ("Expected more than 1 value per channel"), and
  // it guarantees the rows > 1 that the unbiased running variance divides by.
  const bool mode_ok = bn.is_training() ? x.numel() > x.size(1) : !torch::GradMode::is_enabled();
  return residual_ok && bn_ok && mode_ok;
}

Tensor bn_relu(const Tensor& x, torch::nn::BatchNorm2dImpl& bn, const Tensor& residual, bool fused) {
  if (!fused || !fused_bn_relu_applies(x, bn, residual)) return unfused(x, bn, residual);
  if (x.is_cuda())
    return bn.is_training() ? cuda_bn_relu_train(x, bn, residual) : cuda_bn_relu_eval(x, bn, residual);
  if (bn.is_training()) return bn_relu_train<TrainingKernels>(x, bn, residual);
  // Eval, no gradients: the running statistics make BN one affine map, applied with the ReLU in one pass.
  auto [scale, shift] = bn_affine(bn.weight, bn.bias, bn.running_mean, running_invstd(bn));
  Tensor y = torch::empty_like(x, at::MemoryFormat::ChannelsLast);
  const int64_t C = x.size(1);
  normalize_relu(f32(x), residual.defined() ? f32(residual) : nullptr, f32_mut(y), x.numel() / C, C,
                 f32(scale), f32(shift));
  return y;
}

}  // namespace rx::model
