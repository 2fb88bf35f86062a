#include "common/optim/flat_kernels.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

// Built with -fno-math-errno (common/optim/CMakeLists.txt): otherwise std::sqrt keeps its errno path
// and the Adam loop stays scalar.

namespace rx::optim {
namespace {

// Elements per task: large enough that a task's start costs nothing, small enough to share the work.
constexpr int64_t kGrain = 1 << 16;

template <class F>
void for_ranges(int64_t n, const F& f) {
  at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) { f(begin, end); });
}

// Calls f(std::bool_constant<flag>{}...) for the runtime flags, in their order: one instantiation of
// f per combination, so that each loop below is compiled for its flags.
template <class F>
void with_flags(const F& f) {
  f();
}
template <class F, class... Flags>
void with_flags(const F& f, bool flag, Flags... rest) {
  if (flag)
    with_flags([&](auto... c) { f(std::true_type{}, c...); }, rest...);
  else
    with_flags([&](auto... c) { f(std::false_type{}, c...); }, rest...);
}

// The loops take the flags as template parameters so that each is a straight, vectorisable loop.
template <bool kDecay, bool kMomentum, bool kNesterov, bool kFirst>
void sgd_range(float* __restrict p, const float* __restrict g, float* __restrict m, int64_t b, int64_t e,
               float lr, float wd, float mom, float keep) {
  for (int64_t i = b; i < e; ++i) {
    float d = g[i];
    if constexpr (kDecay) d = d + wd * p[i];
    if constexpr (kMomentum) {
      const float buf = kFirst ? d : m[i] * mom + keep * d;
      m[i] = buf;
      d = kNesterov ? d + mom * buf : buf;
    }
    p[i] = p[i] + lr * d;  // lr is negated by the caller, as SGD's add_(d, -lr)
  }
}

template <bool kDecoupled, bool kAmsgrad>
void adam_range(float* __restrict p, const float* __restrict g, float* __restrict m, float* __restrict v,
                float* __restrict vmax, int64_t b, int64_t e, const float* c) {
  const float wd = c[0], decay = c[1], b1 = c[2], k1 = c[3], b2 = c[4], k2 = c[5], root2 = c[6], eps = c[7],
              step = c[8];
  for (int64_t i = b; i < e; ++i) {
    float x = p[i];
    float grad = g[i];
    if constexpr (kDecoupled)
      x = x * decay;
    else
      grad = grad + wd * x;
    const float mi = m[i] * b1 + k1 * grad;
    const float vi = v[i] * b2 + k2 * grad * grad;
    m[i] = mi;
    v[i] = vi;
    float second = vi;
    if constexpr (kAmsgrad) {
      second = std::max(vmax[i], vi);
      vmax[i] = second;
    }
    const float denom = std::sqrt(second) / root2 + eps;
    p[i] = x + step * mi / denom;
  }
}

}  // namespace

void sgd_one_pass(float* p, const float* g, float* m, int64_t n, const SgdScalars& s) {
  const float lr = static_cast<float>(-s.lr), wd = static_cast<float>(s.weight_decay);
  const float mom = static_cast<float>(s.momentum), keep = static_cast<float>(1 - s.dampening);
  const bool has_momentum = s.momentum != 0;
  // Nesterov and the first step only matter with momentum: without it both are passed as false.
  for_ranges(n, [&](int64_t b, int64_t e) {
    with_flags(
        [&](auto decay, auto momentum, auto nesterov, auto first) {
          sgd_range<decay, momentum, nesterov, first>(p, g, m, b, e, lr, wd, mom, keep);
        },
        s.weight_decay != 0, has_momentum, has_momentum && s.nesterov, has_momentum && s.first);
  });
}

void adam_one_pass(float* p, const float* g, float* m, float* v, float* vmax, int64_t n,
                   const AdamScalars& s) {
  // LibTorch's scalars: the moments' weights, sqrt(1 - beta2^t) and -lr / (1 - beta1^t), in double,
  // then rounded to float. With no weight decay the loop still adds 0 * p (or multiplies by 1), which
  // LibTorch skips: the same for every finite parameter (an infinite one becomes NaN a step sooner).
  const double correction1 = 1 - std::pow(s.beta1, static_cast<double>(s.step));
  const double correction2 = 1 - std::pow(s.beta2, static_cast<double>(s.step));
  const float c[] = {static_cast<float>(s.weight_decay),
                     static_cast<float>(1 - s.lr * s.weight_decay),
                     static_cast<float>(s.beta1),
                     static_cast<float>(1 - s.beta1),
                     static_cast<float>(s.beta2),
                     static_cast<float>(1 - s.beta2),
                     static_cast<float>(std::sqrt(correction2)),
                     static_cast<float>(s.eps),
                     static_cast<float>(-s.lr / correction1)};
  for_ranges(n, [&](int64_t b, int64_t e) {
    with_flags(
        [&](auto decoupled, auto amsgrad) { adam_range<decoupled, amsgrad>(p, g, m, v, vmax, b, e, c); },
        s.decoupled, vmax != nullptr);
  });
}

}  // namespace rx::optim
