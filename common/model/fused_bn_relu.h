#pragma once
// [Fused BN-ReLU] relu(batch_norm(x) [+ residual]) in two passes over memory instead of five.
//
// On a CPU the elementwise half of a small ResNeXt's step is bound by memory bandwidth, not arithmetic:
// for resnext20_tiny on 28x28 images (batch 64, one core) LibTorch 1.13 spends ~55% of the step in
// batch_norm, relu, the residual add and their backwards, each reading and writing whole activations.
// The fused version reads x once for the batch statistics and once more to write the output, with the
// residual add and the ReLU folded into that write; backward reads what it needs twice (once for the
// per-channel sums, once for dx) and recomputes the ReLU mask from x instead of reading a saved output
// (blocks with a residual read the saved output instead, and hand the residual its gradient in the
// first pass). Running statistics, momentum and eps follow torch::nn::BatchNorm2d exactly; results
// equal the unfused composition up to float rounding (test_fused_bn_relu), not bit for bit.
//
// On a GPU the same passes are what eager PyTorch spends around cuDNN's convolutions; the CUDA kernels
// (bn_relu_cuda.cu, [BN-ReLU traffic]) do the same two-pass forward and backward on float32, bf16 or
// fp16 activations (autocast), with per-channel sums in a fixed order (deterministic, capturable in a
// CUDA graph).
//
// It applies to channels-last contiguous tensors (float32 on a CPU; float32, bf16 or fp16 on CUDA,
// 16-byte aligned, C a multiple of 16 bytes) with an affine BatchNorm2d that tracks running statistics
// and a fixed momentum; anything else (bf16 on a CPU, NCHW, eval mode with gradients wanted) runs the
// unfused modules, so turning it on never changes what can be trained.
#include <torch/torch.h>

namespace rx::model {

// True when bn_relu would take the fused path for these arguments.
bool fused_bn_relu_applies(const torch::Tensor& x, const torch::nn::BatchNorm2dImpl& bn,
                           const torch::Tensor& residual);

// relu(bn(x) + residual) (no residual when `residual` is undefined). With `fused` false, or where the
// fused kernels do not apply, this is exactly torch::relu(bn->forward(x) [+ residual]).
torch::Tensor bn_relu(const torch::Tensor& x, torch::nn::BatchNorm2dImpl& bn, const torch::Tensor& residual,
                      bool fused);

}  // namespace rx::model
