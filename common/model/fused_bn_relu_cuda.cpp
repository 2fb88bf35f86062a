#include "common/model/fused_bn_relu_cuda.h"

#ifdef RX_WITH_CUDA
#include <ATen/cuda/CUDAContextLight.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdint>

#include "common/model/bn_relu_autograd.h"
#include "common/model/bn_relu_cuda.h"
#endif

namespace rx::model {

#ifdef RX_WITH_CUDA
namespace {
using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

cuda_bn::Shape shape_of(const Tensor& x) {
  cuda_bn::Shape s;
  s.channels = x.size(1);
  s.rows = x.numel() / s.channels;
  s.dtype = x.scalar_type() == torch::kBFloat16 ? cuda_bn::DType::kBFloat16
            : x.scalar_type() == torch::kHalf   ? cuda_bn::DType::kFloat16
                                                : cuda_bn::DType::kFloat32;
  return s;
}

void check(int rc, const char* what) {
  TORCH_CHECK(rc == 0, "model.fused_bn_relu (CUDA) ", what, ": ", cuda_bn::error_string(rc));
}

void* stream_of(const Tensor& x) { return c10::cuda::getCurrentCUDAStream(x.device().index()).stream(); }

Tensor floats(const Tensor& like, at::IntArrayRef sizes) {
  return torch::empty(sizes,
                      like.options().dtype(torch::kFloat32).memory_format(at::MemoryFormat::Contiguous));
}

// [Fused BN-ReLU] on CUDA: the kernel set of bn_relu_autograd.h's two autograd functions (as on the CPU,
// fused_bn_relu.cpp), over the kernels of bn_relu_cuda.cu. Forward saves x, the [4, C] statistics (mean,
// invstd, scale, shift) and, with a residual, the output, whose sign is the ReLU's mask; backward recomputes
// nothing else.
template <bool kResidual>
struct CudaKernels {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& weight, const Tensor& bias,
                        const Tensor& residual, torch::nn::BatchNorm2dImpl* bn) {
    const c10::cuda::CUDAGuard guard(x.device());
    const auto shape = shape_of(x);
    void* stream = stream_of(x);
    Tensor stats = floats(x, {4, shape.channels});
    Tensor partial = floats(x, {cuda_bn::partial_floats(shape)});
    const cuda_bn::RunningStats running{bn->running_mean.data_ptr<float>(), bn->running_var.data_ptr<float>(),
                                        *bn->options.momentum()};
    check(cuda_bn::batch_stats(shape, x.data_ptr(), f32(weight), f32(bias), bn->options.eps(), running,
                               f32_mut(partial), f32_mut(stats), stream),
          "batch statistics");
    {
      torch::NoGradGuard no_grad;
      bn->num_batches_tracked.add_(1);
    }
    Tensor y = torch::empty_like(x, at::MemoryFormat::ChannelsLast);
    check(cuda_bn::normalize_relu(shape, x.data_ptr(), kResidual ? residual.data_ptr() : nullptr,
                                  y.data_ptr(), f32(stats), stream),
          "normalize");
    if constexpr (kResidual)
      ctx->save_for_backward({x, stats, y});
    else
      ctx->save_for_backward({x, stats});
    return y;
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    TORCH_CHECK(!torch::GradMode::is_enabled(),
                "model.fused_bn_relu: double backward (create_graph) is not supported; turn the fusion off");
    const auto saved = ctx->get_saved_variables();
    const Tensor& x = saved[0];
    const Tensor& stats = saved[1];
    const c10::cuda::CUDAGuard guard(x.device());
    // Autograd hands the output's gradient in the output's dtype, usually channels-last already; a view at
    // an odd offset (the output flattened, concatenated and split again) gets a fresh, aligned copy.
    Tensor dy = grads[0].to(x.scalar_type()).contiguous(at::MemoryFormat::ChannelsLast);
    if (!cuda_bn_relu_supports(dy)) dy = dy.clone(at::MemoryFormat::ChannelsLast);
    const auto shape = shape_of(x);
    Tensor dx = torch::empty_like(x, at::MemoryFormat::ChannelsLast);
    Tensor dr = kResidual ? torch::empty_like(x, at::MemoryFormat::ChannelsLast) : Tensor();
    Tensor dweight = floats(x, {shape.channels});
    Tensor dbias = floats(x, {shape.channels});
    Tensor partial = floats(x, {cuda_bn::partial_floats(shape)});
    Tensor coeff = floats(x, {3 * shape.channels});
    check(cuda_bn::backward(shape, x.data_ptr(), kResidual ? saved[2].data_ptr() : nullptr, dy.data_ptr(),
                            f32(stats), dx.data_ptr(), kResidual ? dr.data_ptr() : nullptr, f32_mut(dweight),
                            f32_mut(dbias), f32_mut(partial), f32_mut(coeff), stream_of(x)),
          "backward");
    if constexpr (kResidual) return {dx, dweight, dbias, dr, Tensor()};
    return {dx, dweight, dbias, Tensor()};
  }
};

}  // namespace

bool cuda_bn_relu_supports(const torch::Tensor& t) {
  if (!t.is_cuda() || t.dim() != 4 || !t.is_contiguous(at::MemoryFormat::ChannelsLast)) return false;
  const auto type = t.scalar_type();
  if (type != torch::kFloat32 && type != torch::kBFloat16 && type != torch::kHalf) return false;
  // bn_relu_cuda.cu is built for sm_80 and sm_90 (plus sm_90 PTX): an older card has no kernel image, and
  // runs the modules instead.
  if (at::cuda::getDeviceProperties(t.get_device())->major < 8) return false;
  const int64_t per_vector = cuda_bn::kVectorBytes / static_cast<int64_t>(t.element_size());
  return t.size(1) % per_vector == 0 &&
         reinterpret_cast<std::uintptr_t>(t.data_ptr()) % cuda_bn::kVectorBytes == 0;
}

torch::Tensor cuda_bn_relu_train(const torch::Tensor& x, torch::nn::BatchNorm2dImpl& bn,
                                 const torch::Tensor& residual) {
  return bn_relu_train<CudaKernels>(x, bn, residual);
}

torch::Tensor cuda_bn_relu_eval(const torch::Tensor& x, const torch::nn::BatchNorm2dImpl& bn,
                                const torch::Tensor& residual) {
  const c10::cuda::CUDAGuard guard(x.device());
  torch::NoGradGuard no_grad;
  const Tensor invstd = running_invstd(bn);
  const auto [scale, shift] = bn_affine(bn.weight, bn.bias, bn.running_mean, invstd);
  const Tensor stats = torch::stack({bn.running_mean, invstd, scale, shift}).contiguous();
  Tensor y = torch::empty_like(x, at::MemoryFormat::ChannelsLast);
  check(cuda_bn::normalize_relu(shape_of(x), x.data_ptr(), residual.defined() ? residual.data_ptr() : nullptr,
                                y.data_ptr(), f32(stats), stream_of(x)),
        "normalize (eval)");
  return y;
}

#else  // a CPU build: no CUDA tensor reaches here

bool cuda_bn_relu_supports(const torch::Tensor&) { return false; }

torch::Tensor cuda_bn_relu_train(const torch::Tensor&, torch::nn::BatchNorm2dImpl&, const torch::Tensor&) {
  TORCH_CHECK(false, "model.fused_bn_relu: this build has no CUDA");
  return {};
}

torch::Tensor cuda_bn_relu_eval(const torch::Tensor&, const torch::nn::BatchNorm2dImpl&,
                                const torch::Tensor&) {
  TORCH_CHECK(false, "model.fused_bn_relu: this build has no CUDA");
  return {};
}

#endif

}  // namespace rx::model
