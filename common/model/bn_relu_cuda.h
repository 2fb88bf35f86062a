#pragma once
// The CUDA kernels of [Fused BN-ReLU] (fused_bn_relu.h) behind a plain C++ interface: raw device
// pointers, sizes and a cudaStream_t passed as void*, so that this header and its .cu need neither
// LibTorch nor the CUDA headers of their callers. fused_bn_relu_cuda.cpp owns the tensors, the
// autograd functions and the checks; everything here assumes they passed.
//
// Activations are channels-last: [rows, C] row-major, one row per (n, h, w), in float32, bfloat16 or
// float16, C a multiple of kVectorBytes / element size and every pointer 16-byte aligned (each thread
// moves 16 bytes at a time). Per-channel values (weights, statistics, sums) are float32.
#include <cstdint>

namespace rx::model::cuda_bn {

enum class DType { kFloat32, kBFloat16, kFloat16 };

constexpr int kVectorBytes = 16;

struct Shape {
  int64_t rows = 0;
  int64_t channels = 0;
  DType dtype = DType::kFloat32;
};

// [Deterministic sums] The per-channel reductions write one partial sum pair per (row chunk, channel)
// and a second kernel adds the chunks in a fixed order: no atomics, so a step's result never depends
// on scheduling (the graphed and eager steps of gpu_worker_graph stay bit-identical). A caller gives a
// float buffer of partial_floats(shape) elements.
int64_t partial_floats(const Shape& shape);

// Rows of the [4, C] float "stats" buffer: forward writes all four, backward reads them.
enum StatsRow { kMean = 0, kInvstd = 1, kScale = 2, kShift = 3 };

struct RunningStats {
  float* mean = nullptr;
  float* var = nullptr;
  double momentum = 0.1;
};

// Training forward, pass 1: batch mean and inverse standard deviation, scale = weight * invstd and
// shift = bias - mean * scale into `stats`, and the running statistics updated as BatchNorm2d does
// (momentum-weighted, the unbiased variance; needs rows > 1). Returns a cudaError_t (0 = success).
int batch_stats(const Shape& shape, const void* x, const float* weight, const float* bias, double eps,
                RunningStats running, float* partial, float* stats, void* stream);

// y = relu(x * scale + shift [+ residual]) with scale and shift from rows kScale and kShift of
// `stats` (training forward pass 2, or eval with stats from the running statistics).
int normalize_relu(const Shape& shape, const void* x, const void* residual, void* y, const float* stats,
                   void* stream);

// Training backward from the saved x, `stats` and, with a residual, the saved output y (its sign is
// the ReLU's mask; without one the mask is recomputed from x). Writes dx, the residual's gradient dr
// (only with a residual; the masked dy), dweight and dbias. `coeff` is scratch of 3 * C floats.
int backward(const Shape& shape, const void* x, const void* y, const void* dy, const float* stats, void* dx,
             void* dr, float* dweight, float* dbias, float* partial, float* coeff, void* stream);

const char* error_string(int error);

}  // namespace rx::model::cuda_bn
