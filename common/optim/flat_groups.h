#pragma once
// [Flat groups] The layout under the fused optimizers ([Fused step] in fused_sgd.h, [Fused Adam] in
// fused_adam.h): parameters whose gradients tile one storage back to back form a group, and the
// group's update is arithmetic on a few flat tensors instead of a few small ones per parameter.
//
// The flat layout comes from the gradients: the reducer's .grad tensors alias its bucket buffers
// ([Alias, not view] in common/parallel/reducer.cpp). For each group the parameters are moved into
// one flat buffer (each parameter aliases its slice, in its own dense layout) and every per-parameter
// state buffer (SGD's momentum; Adam's two moments) into a flat buffer of its own. The optimizer's
// per-parameter state objects keep existing and alias their slices, so its checkpoints are LibTorch's
// own and load into either the fused or the per-parameter optimizer. Parameters outside any group (no
// reducer, no or a lone gradient, a dtype or layout mismatch, states that cannot share a group) are
// "loose" and take the per-parameter path.
// The layout is re-derived whenever a pointer check shows a parameter, gradient or state buffer was
// replaced (a checkpoint load, zero_grad(set_to_none) followed by new gradients).
#include <torch/optim/optimizer.h>
#include <torch/utils.h>
#include <torch/version.h>

#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

namespace rx::optim {

// Optimizer::state()'s map and key: a parameter's TensorImpl (as a string in LibTorch 1.13).
using StateMap = std::remove_reference_t<decltype(std::declval<torch::optim::Optimizer&>().state())>;
using StateKey = StateMap::key_type;
StateKey state_key(const torch::Tensor& p);

// How one optimizer's per-parameter state lives in flat buffers.
class FlatState {
 public:
  virtual ~FlatState() = default;
  virtual int buffers() const = 0;  // flat state buffers per group
  // A state's buffers, in order (buffers() of them).
  virtual std::vector<torch::Tensor> read(const torch::optim::OptimizerParamState& s) const = 0;
  // Points a state's buffers at `aliases` (their values already copied in).
  virtual void point(torch::optim::OptimizerParamState& s, std::vector<torch::Tensor> aliases) const = 0;
  // Whether two members' states can share one group (Adam: the same step count).
  virtual bool joinable(const torch::optim::OptimizerParamState&,
                        const torch::optim::OptimizerParamState&) const {
    return true;
  }
};

struct FlatMember {
  torch::Tensor param;
  int64_t offset;  // elements into the group's buffers
  StateKey key;
};

struct FlatGroup {
  std::vector<FlatMember> members;
  torch::Tensor grads, params;       // flat, same length
  std::vector<torch::Tensor> state;  // FlatState::buffers() flat buffers, same length
  bool state_ready = false;          // every member's state aliases `state` (else none has one yet)
  // A member's view of one of the flat buffers: the parameter's sizes and strides at its offset.
  torch::Tensor view(const torch::Tensor& flat, const FlatMember& m) const;
  // Whether the CPU's one-pass update applies ([One pass] in flat_kernels.h).
  bool cpu_float32() const { return params.device().is_cpu() && params.scalar_type() == at::kFloat; }
};

class FlatLayout {
 public:
  // True while the layout still describes `params`: the same parameters, every member still aliasing
  // its slices (parameter, gradient, state buffers), and every loose parameter with a gradient if and
  // only if it had one at build time (a new gradient may belong to a group). Cheap: pointer checks.
  bool valid(const std::vector<torch::Tensor>& params, const StateMap& state, const FlatState& kind) const;
  // Regroups `params`. States that exist are copied into the flat buffers and pointed at their slices.
  void build(const std::vector<torch::Tensor>& params, StateMap& state, const FlatState& kind);
  // Gives each member of `g` a new state from `make()` (the optimizer's first step), pointed at the
  // group's flat state buffers.
  template <class Make>
  void create_states(FlatGroup& g, StateMap& state, const FlatState& kind, const Make& make) {
    for (const auto& m : g.members) {
      std::unique_ptr<torch::optim::OptimizerParamState> s = make();
      std::vector<torch::Tensor> aliases;
      for (const auto& flat : g.state) aliases.push_back(g.view(flat, m));
      kind.point(*s, std::move(aliases));
      state[m.key] = std::move(s);
    }
    g.state_ready = true;
  }

  std::vector<FlatGroup>& groups() { return groups_; }
  const std::vector<FlatGroup>& groups() const { return groups_; }
  const std::vector<torch::Tensor>& loose() const { return loose_; }

 private:
  std::vector<FlatGroup> groups_;
  std::vector<torch::Tensor> loose_;
  std::vector<bool> loose_had_grad_;  // per loose parameter, at build time
  size_t param_count_ = 0;
  bool built_ = false;
};

// The capability the fused optimizers share: a flat layout, and what it holds after the last step
// (run record, tests).
class FusedOptimizer {
 public:
  virtual ~FusedOptimizer() = default;
  int64_t fused_groups() const { return static_cast<int64_t>(layout_.groups().size()); }
  int64_t loose_parameters() const { return static_cast<int64_t>(layout_.loose().size()); }

 protected:
  // The step every fused optimizer takes: the closure's loss (with gradients on), the layout (rebuilt
  // when it no longer describes the parameters and their state), each group, then the loose rest.
  template <class GroupStep, class LooseStep>
  torch::Tensor fused_step(const torch::optim::Optimizer::LossClosure& closure,
                           const std::vector<torch::Tensor>& params, StateMap& state, const FlatState& kind,
                           const GroupStep& step_group, const LooseStep& step_loose) {
    torch::NoGradGuard no_grad;
    torch::Tensor loss;
    if (closure) {
      torch::AutoGradMode enable(true);
      loss = closure();
    }
    if (!layout_.valid(params, state, kind)) layout_.build(params, state, kind);
    for (auto& g : layout_.groups()) step_group(g);
    step_loose();
    return loss;
  }
  FlatLayout layout_;
};

}  // namespace rx::optim
