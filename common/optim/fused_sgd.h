#pragma once
// [Fused step] SGD (momentum, dampening, Nesterov, weight decay) that updates whole flat buffers
// instead of one parameter at a time: a handful of vectorised operations per bucket rather than ~4
// small ones per parameter, which on a CPU with ~160 parameter tensors is most of the optimizer's time.
//
// The flat layout comes from the gradients: the reducer's .grad tensors alias its bucket buffers
// ([Alias, not view] in common/parallel/reducer.cpp), so parameters whose gradients tile one storage
// back to back form a group. For each group the parameters are moved into one flat buffer (each
// parameter aliases its slice, in its own dense layout) and the momentum buffers into another, so
// the update of the group is arithmetic on three flat tensors. Parameters outside any group (no
// reducer, a lone gradient) take torch::optim::SGD's per-parameter path. The arithmetic, and its
// order, is SGD's, so results match it within rounding (bit-identical in practice; tested). Unlike
// SGD, the step works in place on the flat gradients (no temporaries): after step(), .grad holds the
// applied direction (weight decay and Nesterov included) until zero_grad().
//
// Checkpoints are torch::optim::SGD's: the state is the same per-parameter momentum buffers (now
// aliases), so a checkpoint from either optimizer loads into the other. Groups are re-derived
// whenever a pointer check shows a parameter, gradient or momentum buffer was replaced (a checkpoint
// load, zero_grad(set_to_none) followed by new gradients).
#include <torch/optim/sgd.h>
#include <torch/version.h>

#include <string>
#include <vector>

namespace rx::optim {

class FusedSGD : public torch::optim::SGD {
 public:
  FusedSGD(std::vector<torch::Tensor> params, torch::optim::SGDOptions options);
  torch::Tensor step(LossClosure closure = nullptr) override;
  // Flat groups and per-parameter leftovers of the last step (run record, tests).
  int64_t fused_groups() const { return static_cast<int64_t>(groups_.size()); }
  int64_t loose_parameters() const { return static_cast<int64_t>(loose_.size()); }

 private:
  // Optimizer::state_'s key for a parameter: its TensorImpl, as a string in LibTorch 1.13.
#if TORCH_VERSION_MAJOR >= 2
  using StateKey = void*;
#else
  using StateKey = std::string;
#endif
  static StateKey state_key(const torch::Tensor& p);
  struct Member {
    torch::Tensor param;
    int64_t offset;  // elements into the group's buffers
    StateKey key;
  };
  struct Group {
    std::vector<Member> members;
    torch::Tensor grads, params, momentum;  // flat, same length
    bool momentum_ready = false;            // momentum holds the buffers (else the first step fills it)
  };
  bool layout_valid() const;
  void build_groups();
  void step_group(Group& g, const torch::optim::SGDOptions& o);
  void step_loose(const torch::optim::SGDOptions& o);

  std::vector<Group> groups_;
  std::vector<torch::Tensor> loose_;
  bool built_ = false;
};

}  // namespace rx::optim
