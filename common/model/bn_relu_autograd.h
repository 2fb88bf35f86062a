#pragma once
// The two autograd functions of [Fused BN-ReLU], shared by the CPU kernels (fused_bn_relu.cpp) and the
// CUDA ones (fused_bn_relu_cuda.cpp). `Kernels<kResidual>` has
//   static Tensor forward(AutogradContext*, x, weight, bias, residual, BatchNorm2dImpl*)
//   static tensor_list backward(AutogradContext*, tensor_list grads)
// The two functions differ only in whether the residual is an input: autograd takes no undefined ones.
// Also the pieces both kernel sets use around their kernels: BN's affine map and float pointers.
#include <torch/torch.h>

#include <utility>

namespace rx::model {

// scale = gamma * invstd and shift = beta - mean * scale, computed the same way in forward and
// backward (and in eval, from the running statistics) so that backward's recomputed ReLU mask is
// forward's.
inline std::pair<torch::Tensor, torch::Tensor> bn_affine(const torch::Tensor& weight,
                                                         const torch::Tensor& bias, const torch::Tensor& mean,
                                                         const torch::Tensor& invstd) {
  torch::Tensor scale = weight.detach() * invstd;
  torch::Tensor shift = bias.detach() - mean * scale;
  return {scale.contiguous(), shift.contiguous()};
}

// Eval: the running statistics' inverse standard deviation, 1 / sqrt(running_var + eps).
inline torch::Tensor running_invstd(const torch::nn::BatchNorm2dImpl& bn) {
  return (bn.running_var + bn.options.eps()).rsqrt();
}

inline const float* f32(const torch::Tensor& t) { return t.data_ptr<float>(); }
inline float* f32_mut(torch::Tensor& t) { return t.data_ptr<float>(); }

template <template <bool> class Kernels>
struct BnReluAutograd : public torch::autograd::Function<BnReluAutograd<Kernels>> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& weight, const torch::Tensor& bias,
                               torch::nn::BatchNorm2dImpl* bn) {
    return Kernels<false>::forward(ctx, x, weight, bias, torch::Tensor(), bn);
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    return Kernels<false>::backward(ctx, std::move(grads));
  }
};

template <template <bool> class Kernels>
struct BnAddReluAutograd : public torch::autograd::Function<BnAddReluAutograd<Kernels>> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& weight, const torch::Tensor& bias,
                               const torch::Tensor& residual, torch::nn::BatchNorm2dImpl* bn) {
    return Kernels<true>::forward(ctx, x, weight, bias, residual, bn);
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    return Kernels<true>::backward(ctx, std::move(grads));
  }
};

// relu(bn(x) [+ residual]) in training mode through Kernels.
template <template <bool> class Kernels>
torch::Tensor bn_relu_train(const torch::Tensor& x, torch::nn::BatchNorm2dImpl& bn,
                            const torch::Tensor& residual) {
  return residual.defined() ? BnAddReluAutograd<Kernels>::apply(x, bn.weight, bn.bias, residual, &bn)
                            : BnReluAutograd<Kernels>::apply(x, bn.weight, bn.bias, &bn);
}

}  // namespace rx::model
