// CUDA kernels of [Fused BN-ReLU]; the interface and its assumptions are in bn_relu_cuda.h.
//
// [BN-ReLU traffic] Per activation of C channels, PyTorch's eager BatchNorm2d + ReLU (+ residual add)
// in training moves 5 tensors' worth of memory forward (statistics read, normalise read + write, ReLU
// read + write; 8 with the add) and 8 backward (ReLU backward 3, BN backward 5). Here: forward 3 (4
// with the residual): one read for the statistics, one read and one write for the output; backward 5
// (7 with the residual): one pass for the per-channel sums, one for dx. On a GPU these passes are bound
// by memory bandwidth, so the saving is their ratio; the convolutions around them are untouched.
//
// Launch geometry: a block is kThreads threads as (tx, ty), tx threads along channel vectors of one row
// (a warp reads 32 x 16 contiguous bytes when C allows), ty rows at a time; grid.x tiles the channel
// vectors, grid.y splits the rows into chunks that each thread walks with a grid stride, kUnroll rows
// per step so that several 16-byte loads are in flight per thread.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>

#include "common/model/bn_relu_cuda.h"

namespace rx::model::cuda_bn {
namespace {

constexpr int kThreads = 256;
constexpr int kUnroll = 4;

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }

template <class T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}

template <class T>
struct Elems {
  static constexpr int kN = kVectorBytes / static_cast<int>(sizeof(T));
};

// One 16-byte access as its elements in float.
template <class T>
struct alignas(kVectorBytes) Pack {
  T v[Elems<T>::kN];
};

template <class T>
__device__ __forceinline__ void load(const T* p, float* out) {
  const Pack<T> pk = *reinterpret_cast<const Pack<T>*>(p);
#pragma unroll
  for (int i = 0; i < Elems<T>::kN; ++i) out[i] = to_float(pk.v[i]);
}

template <class T>
__device__ __forceinline__ void store(T* p, const float* in) {
  Pack<T> pk;
#pragma unroll
  for (int i = 0; i < Elems<T>::kN; ++i) pk.v[i] = from_float<T>(in[i]);
  *reinterpret_cast<Pack<T>*>(p) = pk;
}

// N consecutive per-channel floats (not necessarily 16-byte aligned: plain loads, once per thread).
template <int N>
__device__ __forceinline__ void load_channels(const float* p, float* out) {
#pragma unroll
  for (int i = 0; i < N; ++i) out[i] = p[i];
}

// The ReLU and its mask. z < 0 ? 0 : z keeps a NaN a NaN (as torch::relu does), so a diverged step
// still shows as a non-finite loss; the gradient is blocked only where the output is <= 0 (a NaN output
// passes it, as torch's threshold_backward does).
__device__ __forceinline__ float relu(float z) { return z < 0.f ? 0.f : z; }
__device__ __forceinline__ bool passes(float out) { return !(out <= 0.f); }

struct Grid {
  int vectors = 0;  // channel vectors per row: C / N
  int tx = 0, ty = 0;
  int tiles = 0, chunks = 0;
};

int sm_count() {
  static std::atomic<int> cache[64];
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return 132;
  if (device >= 0 && device < 64 && cache[device].load() > 0) return cache[device].load();
  int n = 0;
  if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || n <= 0) n = 132;
  if (device >= 0 && device < 64) cache[device].store(n);
  return n;
}

int elem_bytes(DType d) { return d == DType::kFloat32 ? 4 : 2; }

// `blocks_per_sm` sets how many blocks the grid aims at; the rows bound it (no empty chunks).
Grid grid_for(const Shape& s, int blocks_per_sm) {
  Grid g;
  g.vectors = static_cast<int>(s.channels / (kVectorBytes / elem_bytes(s.dtype)));
  g.tx = 1;
  while (g.tx < g.vectors && g.tx < 32) g.tx *= 2;
  g.ty = kThreads / g.tx;
  g.tiles = (g.vectors + g.tx - 1) / g.tx;
  const int64_t wanted = (static_cast<int64_t>(blocks_per_sm) * sm_count() + g.tiles - 1) / g.tiles;
  const int64_t most = std::min<int64_t>((s.rows + g.ty - 1) / g.ty, 65535);
  g.chunks = static_cast<int>(std::clamp<int64_t>(wanted, 1, std::max<int64_t>(most, 1)));
  return g;
}

// The reductions' grid: partial_floats() sizes the scratch from it, so both use this one function.
Grid reduce_grid(const Shape& s) { return grid_for(s, 4); }
Grid elementwise_grid(const Shape& s) { return grid_for(s, 8); }

// Adds each thread's per-channel pair (a, b) over the block's ty rows in a fixed tree order and writes
// the block's sums to partial[chunk][2][C]. Every thread of the block must call it.
template <int N>
__device__ void block_sums(const float (&a)[N], const float (&b)[N], float* partial, int64_t C, int64_t c0,
                           bool valid) {
  extern __shared__ float shared[];  // [ty][tx][2N]
  const int tx = blockDim.x, x = threadIdx.x, y = threadIdx.y;
  float* mine = shared + (y * tx + x) * 2 * N;
#pragma unroll
  for (int i = 0; i < N; ++i) {
    mine[i] = a[i];
    mine[N + i] = b[i];
  }
  __syncthreads();
  for (int half = blockDim.y / 2; half > 0; half /= 2) {
    if (y < half) {
      const float* other = shared + ((y + half) * tx + x) * 2 * N;
#pragma unroll
      for (int i = 0; i < 2 * N; ++i) mine[i] += other[i];
    }
    __syncthreads();
  }
  if (y == 0 && valid) {
    float* out = partial + static_cast<int64_t>(blockIdx.y) * 2 * C + c0;
#pragma unroll
    for (int i = 0; i < N; ++i) {
      out[i] = mine[i];
      out[C + i] = mine[N + i];
    }
  }
}

// Channel c's two sums over the chunks of block_sums, in chunk order, in double ([Deterministic sums]).
__device__ __forceinline__ void chunk_sums(const float* __restrict__ partial, int64_t C, int chunks,
                                           int64_t c, double& a, double& b) {
  for (int k = 0; k < chunks; ++k) {
    a += partial[static_cast<int64_t>(k) * 2 * C + c];
    b += partial[static_cast<int64_t>(k) * 2 * C + C + c];
  }
}

// Pass 1 of the forward: sums of (x - pivot) and (x - pivot)^2 per channel, the pivot being row 0, so
// that a mean large against the spread does not cancel the variance in float.
template <class T>
__global__ void __launch_bounds__(kThreads) moments_kernel(const T* __restrict__ x, int64_t rows, int64_t C,
                                                           int vectors, float* __restrict__ partial) {
  constexpr int N = Elems<T>::kN;
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  const bool valid = j < vectors;
  const int64_t c0 = static_cast<int64_t>(j) * N;
  float s[N], q[N], pivot[N];
#pragma unroll
  for (int i = 0; i < N; ++i) s[i] = q[i] = pivot[i] = 0.f;
  if (valid) {
    load(x + c0, pivot);
    const int64_t stride = static_cast<int64_t>(gridDim.y) * blockDim.y;
    for (int64_t r = static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y; r < rows;
         r += stride * kUnroll) {
      float v[kUnroll][N];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t ru = r + u * stride;
        if (ru < rows) {
          load(x + ru * C + c0, v[u]);
        } else {
#pragma unroll
          for (int i = 0; i < N; ++i) v[u][i] = pivot[i];  // adds nothing
        }
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u)
#pragma unroll
        for (int i = 0; i < N; ++i) {
          const float d = v[u][i] - pivot[i];
          s[i] += d;
          q[i] = fmaf(d, d, q[i]);
        }
    }
  }
  block_sums<N>(s, q, partial, C, c0, valid);
}

// One thread per channel: the chunks' sums, then the statistics.
template <class T>
__global__ void stats_kernel(const T* __restrict__ x, int64_t rows, int64_t C, int chunks,
                             const float* __restrict__ partial, const float* __restrict__ weight,
                             const float* __restrict__ bias, double eps, float* running_mean,
                             float* running_var, double momentum, float* __restrict__ stats) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  double s = 0, q = 0;
  chunk_sums(partial, C, chunks, c, s, q);
  const double m = s / static_cast<double>(rows);
  const double v = q / static_cast<double>(rows) - m * m;
  const double var = v < 0 ? 0.0 : v;  // not fmax: a NaN batch leaves a NaN running_var, as in torch
  const float mean = static_cast<float>(static_cast<double>(to_float(x[c])) + m);
  const float invstd = static_cast<float>(1.0 / sqrt(var + eps));
  const float scale = weight[c] * invstd;
  stats[kMean * C + c] = mean;
  stats[kInvstd * C + c] = invstd;
  stats[kScale * C + c] = scale;
  stats[kShift * C + c] = bias[c] - mean * scale;
  if (running_mean != nullptr) {  // BatchNorm2d: momentum-weighted, the unbiased variance
    const float mom = static_cast<float>(momentum);
    const double unbias = static_cast<double>(rows) / static_cast<double>(rows - 1);
    running_mean[c] = running_mean[c] * (1.f - mom) + mom * mean;
    running_var[c] = running_var[c] * (1.f - mom) + mom * static_cast<float>(var * unbias);
  }
}

// y = relu(x * scale + shift [+ residual]).
template <class T, bool kResidual>
__global__ void __launch_bounds__(kThreads)
    normalize_kernel(const T* __restrict__ x, const T* __restrict__ residual, T* __restrict__ y,
                     const float* __restrict__ stats, int64_t rows, int64_t C, int vectors) {
  constexpr int N = Elems<T>::kN;
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= vectors) return;
  const int64_t c0 = static_cast<int64_t>(j) * N;
  float scale[N], shift[N];
  load_channels<N>(stats + kScale * C + c0, scale);
  load_channels<N>(stats + kShift * C + c0, shift);
  const int64_t stride = static_cast<int64_t>(gridDim.y) * blockDim.y;
  for (int64_t r = static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y; r < rows;
       r += stride * kUnroll) {
    float v[kUnroll][N], add[kUnroll][N];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t ru = r + u * stride;
      if (ru < rows) {
        load(x + ru * C + c0, v[u]);
        if constexpr (kResidual) load(residual + ru * C + c0, add[u]);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t ru = r + u * stride;
      if (ru >= rows) continue;
#pragma unroll
      for (int i = 0; i < N; ++i) {
        float z = fmaf(v[u][i], scale[i], shift[i]);
        if constexpr (kResidual) z += add[u][i];
        v[u][i] = relu(z);
      }
      store(y + ru * C + c0, v[u]);
    }
  }
}

// Backward pass 1: g = dy where the output was > 0; sums of g and g * (x - mean) per channel. Without
// a residual the mask is recomputed from x with forward's own scale and shift (same fmaf, same
// operands: the same mask bit for bit); with one it is read from the saved output, and g is written
// out as the residual's gradient.
template <class T, bool kResidual>
__global__ void __launch_bounds__(kThreads)
    grad_sums_kernel(const T* __restrict__ x, const T* __restrict__ y, const T* __restrict__ dy,
                     T* __restrict__ dr, const float* __restrict__ stats, int64_t rows, int64_t C,
                     int vectors, float* __restrict__ partial) {
  constexpr int N = Elems<T>::kN;
  constexpr int U = kUnroll / 2;  // three input streams: fewer rows in flight keeps registers in check
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  const bool valid = j < vectors;
  const int64_t c0 = static_cast<int64_t>(j) * N;
  float sg[N], sgx[N], mean[N], scale[N], shift[N];
#pragma unroll
  for (int i = 0; i < N; ++i) sg[i] = sgx[i] = mean[i] = scale[i] = shift[i] = 0.f;
  if (valid) {
    load_channels<N>(stats + kMean * C + c0, mean);
    load_channels<N>(stats + kScale * C + c0, scale);
    load_channels<N>(stats + kShift * C + c0, shift);
    const int64_t stride = static_cast<int64_t>(gridDim.y) * blockDim.y;
    for (int64_t r = static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y; r < rows; r += stride * U) {
      float xv[U][N], d[U][N], out[U][N];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int64_t ru = r + u * stride;
        if (ru < rows) {
          load(x + ru * C + c0, xv[u]);
          load(dy + ru * C + c0, d[u]);
          if constexpr (kResidual) load(y + ru * C + c0, out[u]);
        } else {
#pragma unroll
          for (int i = 0; i < N; ++i) {
            xv[u][i] = mean[i];  // g = 0: adds nothing
            d[u][i] = 0.f;
            out[u][i] = 0.f;
          }
        }
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
#pragma unroll
        for (int i = 0; i < N; ++i) {
          const bool pass = passes(kResidual ? out[u][i] : fmaf(xv[u][i], scale[i], shift[i]));
          const float g = pass ? d[u][i] : 0.f;
          d[u][i] = g;
          sg[i] += g;
          sgx[i] = fmaf(g, xv[u][i] - mean[i], sgx[i]);
        }
        if constexpr (kResidual) {
          const int64_t ru = r + u * stride;
          if (ru < rows) store(dr + ru * C + c0, d[u]);
        }
      }
    }
  }
  block_sums<N>(sg, sgx, partial, C, c0, valid);
}

// One thread per channel: dweight, dbias and dx = g * a + (x - mean) * b + k's coefficients, with
// a = scale, b = -scale * invstd^2 * sum(g (x - mean)) / rows, k = -scale * sum(g) / rows. Centring x
// before multiplying by b matters: b carries invstd squared, and x * b and mean * b cancel when the
// mean is large against the spread.
__global__ void grad_coeff_kernel(int64_t rows, int64_t C, int chunks, const float* __restrict__ partial,
                                  const float* __restrict__ stats, float* __restrict__ coeff,
                                  float* __restrict__ dweight, float* __restrict__ dbias) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  double sg = 0, sgx = 0;
  chunk_sums(partial, C, chunks, c, sg, sgx);
  const double is = stats[kInvstd * C + c], a = stats[kScale * C + c];
  const double n = static_cast<double>(rows);
  coeff[c] = static_cast<float>(a);
  coeff[C + c] = static_cast<float>(-a * is * is * sgx / n);
  coeff[2 * C + c] = static_cast<float>(-a * sg / n);
  dweight[c] = static_cast<float>(sgx * is);
  dbias[c] = static_cast<float>(sg);
}

// Backward pass 2: dx from x and dy (mask recomputed) or from x and pass 1's masked gradient.
template <class T, bool kResidual>
__global__ void __launch_bounds__(kThreads)
    grad_input_kernel(const T* __restrict__ x, const T* __restrict__ src, T* __restrict__ dx,
                      const float* __restrict__ stats, const float* __restrict__ coeff, int64_t rows,
                      int64_t C, int vectors) {
  constexpr int N = Elems<T>::kN;
  constexpr int U = kUnroll / 2;
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= vectors) return;
  const int64_t c0 = static_cast<int64_t>(j) * N;
  float mean[N], scale[N], shift[N], a[N], b[N], k[N];
  load_channels<N>(stats + kMean * C + c0, mean);
  load_channels<N>(stats + kScale * C + c0, scale);
  load_channels<N>(stats + kShift * C + c0, shift);
  load_channels<N>(coeff + c0, a);
  load_channels<N>(coeff + C + c0, b);
  load_channels<N>(coeff + 2 * C + c0, k);
  const int64_t stride = static_cast<int64_t>(gridDim.y) * blockDim.y;
  for (int64_t r = static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y; r < rows; r += stride * U) {
    float xv[U][N], g[U][N];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t ru = r + u * stride;
      if (ru < rows) {
        load(x + ru * C + c0, xv[u]);
        load(src + ru * C + c0, g[u]);
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t ru = r + u * stride;
      if (ru >= rows) continue;
#pragma unroll
      for (int i = 0; i < N; ++i) {
        float gi = g[u][i];
        if constexpr (!kResidual) gi = passes(fmaf(xv[u][i], scale[i], shift[i])) ? gi : 0.f;
        g[u][i] = fmaf(gi, a[i], fmaf(xv[u][i] - mean[i], b[i], k[i]));
      }
      store(dx + ru * C + c0, g[u]);
    }
  }
}

template <class F>
int with_type(DType d, F&& f) {
  switch (d) {
    case DType::kFloat32:
      return f(float{});
    case DType::kBFloat16:
      return f(__nv_bfloat16{});
    case DType::kFloat16:
      return f(__half{});
  }
  return static_cast<int>(cudaErrorInvalidValue);
}

size_t shared_bytes(const Grid& g, int elems) {
  return static_cast<size_t>(g.tx) * g.ty * 2 * elems * sizeof(float);
}

int last_error() { return static_cast<int>(cudaGetLastError()); }

unsigned per_channel_blocks(int64_t C) { return static_cast<unsigned>((C + 255) / 256); }

}  // namespace

int64_t partial_floats(const Shape& shape) {
  return static_cast<int64_t>(reduce_grid(shape).chunks) * 2 * shape.channels;
}

int batch_stats(const Shape& shape, const void* x, const float* weight, const float* bias, double eps,
                RunningStats running, float* partial, float* stats, void* stream) {
  const auto st = static_cast<cudaStream_t>(stream);
  return with_type(shape.dtype, [&](auto tag) {
    using T = decltype(tag);
    const Grid g = reduce_grid(shape);
    const T* xp = static_cast<const T*>(x);
    moments_kernel<T><<<dim3(g.tiles, g.chunks), dim3(g.tx, g.ty), shared_bytes(g, Elems<T>::kN), st>>>(
        xp, shape.rows, shape.channels, g.vectors, partial);
    if (int e = last_error()) return e;
    stats_kernel<T><<<per_channel_blocks(shape.channels), 256, 0, st>>>(
        xp, shape.rows, shape.channels, g.chunks, partial, weight, bias, eps, running.mean, running.var,
        running.momentum, stats);
    return last_error();
  });
}

int normalize_relu(const Shape& shape, const void* x, const void* residual, void* y, const float* stats,
                   void* stream) {
  const auto st = static_cast<cudaStream_t>(stream);
  return with_type(shape.dtype, [&](auto tag) {
    using T = decltype(tag);
    const Grid g = elementwise_grid(shape);
    const dim3 grid(g.tiles, g.chunks), block(g.tx, g.ty);
    const T* xp = static_cast<const T*>(x);
    T* yp = static_cast<T*>(y);
    if (residual != nullptr)
      normalize_kernel<T, true><<<grid, block, 0, st>>>(xp, static_cast<const T*>(residual), yp, stats,
                                                        shape.rows, shape.channels, g.vectors);
    else
      normalize_kernel<T, false>
          <<<grid, block, 0, st>>>(xp, nullptr, yp, stats, shape.rows, shape.channels, g.vectors);
    return last_error();
  });
}

int backward(const Shape& shape, const void* x, const void* y, const void* dy, const float* stats, void* dx,
             void* dr, float* dweight, float* dbias, float* partial, float* coeff, void* stream) {
  const auto st = static_cast<cudaStream_t>(stream);
  return with_type(shape.dtype, [&](auto tag) {
    using T = decltype(tag);
    const Grid g = reduce_grid(shape);
    const size_t smem = shared_bytes(g, Elems<T>::kN);
    const T* xp = static_cast<const T*>(x);
    const T* dyp = static_cast<const T*>(dy);
    const bool residual = dr != nullptr;
    if (residual)
      grad_sums_kernel<T, true><<<dim3(g.tiles, g.chunks), dim3(g.tx, g.ty), smem, st>>>(
          xp, static_cast<const T*>(y), dyp, static_cast<T*>(dr), stats, shape.rows, shape.channels,
          g.vectors, partial);
    else
      grad_sums_kernel<T, false><<<dim3(g.tiles, g.chunks), dim3(g.tx, g.ty), smem, st>>>(
          xp, nullptr, dyp, nullptr, stats, shape.rows, shape.channels, g.vectors, partial);
    if (int e = last_error()) return e;
    grad_coeff_kernel<<<per_channel_blocks(shape.channels), 256, 0, st>>>(
        shape.rows, shape.channels, g.chunks, partial, stats, coeff, dweight, dbias);
    if (int e = last_error()) return e;
    const Grid ge = elementwise_grid(shape);
    const dim3 grid(ge.tiles, ge.chunks), block(ge.tx, ge.ty);
    if (residual)
      grad_input_kernel<T, true><<<grid, block, 0, st>>>(xp, static_cast<const T*>(dr), static_cast<T*>(dx),
                                                         stats, coeff, shape.rows, shape.channels,
                                                         ge.vectors);
    else
      grad_input_kernel<T, false><<<grid, block, 0, st>>>(xp, dyp, static_cast<T*>(dx), stats, coeff,
                                                          shape.rows, shape.channels, ge.vectors);
    return last_error();
  });
}

const char* error_string(int error) { return cudaGetErrorString(static_cast<cudaError_t>(error)); }

}  // namespace rx::model::cuda_bn
