#pragma once
// [Fused Adam] Adam and AdamW over [Flat groups] (flat_groups.h). On the CPU in float32 a group's
// update is one pass over memory ([One pass], flat_kernels.h). Elsewhere (GPUs, other dtypes) it is
// LibTorch's per-parameter arithmetic, in its order, applied to the flat tensors (parameters,
// gradients, the two moments and AMSGrad's maximum): ~9 operations per bucket instead of ~9 per
// parameter, Adam's L2 decay added to the flat gradients in place (so .grad holds the decayed gradient
// until zero_grad()), and the denominator computed into one scratch buffer the size of the largest
// group, kept across steps. Either way results match torch::optim::Adam / AdamW within float rounding
// (tested to 1e-6). All members of a group take their step together, so they share one step count;
// it is written back into every member's state after each step.
//
// Checkpoints are LibTorch's own: the state is the same per-parameter AdamParamState /
// AdamWParamState (step, exp_avg, exp_avg_sq, max_exp_avg_sq), its tensors aliasing the flat buffers,
// so a checkpoint from either optimizer loads into the other.
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>

#include <type_traits>
#include <vector>

#include "common/optim/flat_groups.h"

namespace rx::optim {

template <class Base>  // torch::optim::Adam (L2 decay on the gradient) or AdamW (decoupled decay)
class FusedAdamT : public Base, public FusedOptimizer {
 public:
  static constexpr bool kDecoupled = std::is_same_v<Base, torch::optim::AdamW>;
  using Options = std::conditional_t<kDecoupled, torch::optim::AdamWOptions, torch::optim::AdamOptions>;
  using ParamState =
      std::conditional_t<kDecoupled, torch::optim::AdamWParamState, torch::optim::AdamParamState>;

  FusedAdamT(std::vector<torch::Tensor> params, Options options);
  torch::Tensor step(torch::optim::Optimizer::LossClosure closure = nullptr) override;

 private:
  // Adam's state in flat buffers: exp_avg, exp_avg_sq and, with AMSGrad, max_exp_avg_sq.
  class MomentState : public FlatState {
   public:
    explicit MomentState(bool amsgrad) : amsgrad_(amsgrad) {}
    int buffers() const override { return amsgrad_ ? 3 : 2; }
    std::vector<torch::Tensor> read(const torch::optim::OptimizerParamState& s) const override;
    void point(torch::optim::OptimizerParamState& s, std::vector<torch::Tensor> aliases) const override;
    bool joinable(const torch::optim::OptimizerParamState& a,
                  const torch::optim::OptimizerParamState& b) const override;

   private:
    bool amsgrad_;
  };
  void step_group(FlatGroup& g, const Options& o);
  void step_loose(const Options& o);

  MomentState kind_;
  torch::Tensor scratch_;  // the denominator, sized to the largest group
};

using FusedAdam = FusedAdamT<torch::optim::Adam>;
using FusedAdamW = FusedAdamT<torch::optim::AdamW>;
extern template class FusedAdamT<torch::optim::Adam>;
extern template class FusedAdamT<torch::optim::AdamW>;

}  // namespace rx::optim
