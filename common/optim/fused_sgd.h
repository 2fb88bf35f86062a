#pragma once
// [Fused step] SGD (momentum, dampening, Nesterov, weight decay) that updates whole flat buffers
// instead of one parameter at a time: one loop per bucket on the CPU (float32), a handful of tensor
// operations per bucket elsewhere, rather than ~4 small ones per parameter.
//
// The flat layout is [Flat groups] (flat_groups.h): the reducer's buckets give the gradients, the
// parameters and momentum buffers move into matching flat buffers, and parameters outside any group
// take torch::optim::SGD's per-parameter path. The arithmetic, and its order, is SGD's, so results
// match it within float rounding (tested to 1e-6). On the CPU in float32 the update is one pass over
// memory ([One pass], flat_kernels.h); on GPUs and for other dtypes it is tensor operations in place
// on the flat gradients, so after step() .grad may hold the applied direction (weight decay and
// Nesterov included) until zero_grad().
//
// Checkpoints are torch::optim::SGD's: the state is the same per-parameter momentum buffers (now
// aliases), so a checkpoint from either optimizer loads into the other.
#include <torch/optim/sgd.h>

#include <vector>

#include "common/optim/flat_groups.h"

namespace rx::optim {

class FusedSGD : public torch::optim::SGD, public FusedOptimizer {
 public:
  FusedSGD(std::vector<torch::Tensor> params, torch::optim::SGDOptions options);
  torch::Tensor step(LossClosure closure = nullptr) override;

 private:
  // SGD's state in flat buffers: the momentum buffer.
  class MomentumState : public FlatState {
   public:
    int buffers() const override { return 1; }
    std::vector<torch::Tensor> read(const torch::optim::OptimizerParamState& s) const override;
    void point(torch::optim::OptimizerParamState& s, std::vector<torch::Tensor> aliases) const override;
  };
  void step_group(FlatGroup& g, const torch::optim::SGDOptions& o);
  void step_loose(const torch::optim::SGDOptions& o);

  MomentumState kind_;
};

}  // namespace rx::optim
