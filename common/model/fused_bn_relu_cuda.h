#pragma once
// The CUDA half of [Fused BN-ReLU] (fused_bn_relu.h): the checks, the autograd functions and the
// tensors around the kernels of bn_relu_cuda.cu. In a CPU build cuda_bn_relu_supports() is false and
// the other two are never called.
#include <torch/torch.h>

namespace rx::model {

// True for a CUDA tensor the kernels take: float32, bfloat16 or float16, channels-last contiguous,
// 16-byte aligned, its channels a whole number of 16-byte vectors (C % 8 == 0 in 16-bit types, C % 4
// in float32).
bool cuda_bn_relu_supports(const torch::Tensor& t);

// Training mode: batch statistics, the running statistics updated, the fused backward.
torch::Tensor cuda_bn_relu_train(const torch::Tensor& x, torch::nn::BatchNorm2dImpl& bn,
                                 const torch::Tensor& residual);

// Eval mode without gradients: one pass with the running statistics.
torch::Tensor cuda_bn_relu_eval(const torch::Tensor& x, const torch::nn::BatchNorm2dImpl& bn,
                                const torch::Tensor& residual);

}  // namespace rx::model
