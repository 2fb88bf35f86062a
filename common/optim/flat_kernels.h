#pragma once
// [One pass] The fused optimizers' update of a flat group on the CPU, as one loop over memory. The
// tensor-operation form (still used on GPUs and for other dtypes) makes ~5 (SGD) or ~9 (Adam) passes
// over bucket-sized buffers, each reading and writing all of them: on resnext50_32x4d's 23 M
// parameters that was slower than LibTorch's per-parameter loop, whose small tensors stay in cache
// between operations. Here every element is read and written once: SGD reads p, g, m and writes p, m;
// Adam reads p, g, m, v and writes p, m, v.
//
// The arithmetic is LibTorch's, step for step, in float with its scalars rounded to float as its CPU
// kernels do; the compiler may contract a multiply-add or vectorise differently, so results agree with
// the per-parameter optimizers within float rounding (tested to 1e-6), not bit for bit. The loops are
// element-wise, so the result does not depend on the thread count.
#include <cstdint>

namespace rx::optim {

struct SgdScalars {
  double lr, weight_decay, momentum, dampening;
  bool nesterov;
  bool first;  // SGD's first step: the momentum buffer starts as the direction itself
};
// p -= lr * direction, where direction is SGD's (weight decay, momentum, dampening, Nesterov); m is the
// momentum buffer (unused when momentum is 0). The gradient is read, not written.
void sgd_one_pass(float* p, const float* g, float* m, int64_t n, const SgdScalars& s);

struct AdamScalars {
  double lr, beta1, beta2, eps, weight_decay;
  int64_t step;    // after this step's increment (1 on the first)
  bool decoupled;  // AdamW: p *= 1 - lr * wd; Adam: g + wd * p
};
// Adam's update; vmax is AMSGrad's running maximum, or null without AMSGrad.
void adam_one_pass(float* p, const float* g, float* m, float* v, float* vmax, int64_t n,
                   const AdamScalars& s);

}  // namespace rx::optim
