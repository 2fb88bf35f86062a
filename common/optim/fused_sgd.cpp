#include "common/optim/fused_sgd.h"

#include "common/optim/flat_kernels.h"
#include "common/util/error.h"

namespace rx::optim {

using torch::optim::SGDOptions;
using torch::optim::SGDParamState;

FusedSGD::FusedSGD(std::vector<torch::Tensor> params, SGDOptions options) : SGD(std::move(params), options) {
  RX_CHECK(param_groups().size() == 1, "FusedSGD takes one parameter group");
}

std::vector<torch::Tensor> FusedSGD::MomentumState::read(const torch::optim::OptimizerParamState& s) const {
  return {static_cast<const SGDParamState&>(s).momentum_buffer()};
}

void FusedSGD::MomentumState::point(torch::optim::OptimizerParamState& s,
                                    std::vector<torch::Tensor> aliases) const {
  static_cast<SGDParamState&>(s).momentum_buffer(std::move(aliases[0]));
}

// [Fused step] On the CPU in float32, one pass over the group ([One pass], flat_kernels.h). Elsewhere
// (GPUs, other dtypes) a few tensor operations, in place on the flat gradients: d = g + wd * p and the
// Nesterov d + momentum * m are written over g, so a step allocates nothing (a bucket-sized temporary
// per operation cost more than the dispatches saved, measured on resnext50_32x4d).
void FusedSGD::step_group(FlatGroup& g, const SGDOptions& o) {
  const bool momentum = o.momentum() != 0;
  const bool first = momentum && !g.state_ready;  // SGD's first step: buf = d
  torch::Tensor& buf = g.state[0];
  if (g.cpu_float32()) {
    sgd_one_pass(g.params.data_ptr<float>(), g.grads.data_ptr<float>(), buf.data_ptr<float>(),
                 g.params.numel(),
                 {o.lr(), o.weight_decay(), o.momentum(), o.dampening(), o.nesterov(), first});
  } else {
    torch::Tensor d = g.grads;
    if (o.weight_decay() != 0) d.add_(g.params, o.weight_decay());
    if (momentum) {
      if (first)
        buf.copy_(d);
      else
        buf.mul_(o.momentum()).add_(d, 1 - o.dampening());
      if (o.nesterov())
        d.add_(buf, o.momentum());
      else
        d = buf;
    }
    g.params.add_(d, -o.lr());
  }
  if (first) layout_.create_states(g, state_, kind_, [] { return std::make_unique<SGDParamState>(); });
}

// torch::optim::SGD::step's arithmetic for the parameters outside any group.
void FusedSGD::step_loose(const SGDOptions& o) {
  for (auto p : layout_.loose()) {
    if (!p.grad().defined()) continue;
    auto d = p.grad();
    if (o.weight_decay() != 0) d = d.add(p, o.weight_decay());
    if (o.momentum() != 0) {
      torch::Tensor buf;
      const auto key = state_key(p);
      auto it = state_.find(key);
      if (it == state_.end()) {
        buf = d.clone().detach();
        auto st = std::make_unique<SGDParamState>();
        st->momentum_buffer(buf);
        state_[key] = std::move(st);
      } else {
        buf = static_cast<SGDParamState&>(*it->second).momentum_buffer();
        buf.mul_(o.momentum()).add_(d, 1 - o.dampening());
      }
      d = o.nesterov() ? d.add(buf, o.momentum()) : buf;
    }
    p.add_(d, -o.lr());
  }
}

torch::Tensor FusedSGD::step(LossClosure closure) {
  const auto& o = static_cast<const SGDOptions&>(param_groups()[0].options());
  return fused_step(
      closure, param_groups()[0].params(), state_, kind_, [&](FlatGroup& g) { step_group(g, o); },
      [&] { step_loose(o); });
}

}  // namespace rx::optim
