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

namespace {
// torch::optim::SGD's update of one tensor, in place on `d` (its gradient, or a copy of it), with
// SGD's operations in SGD's order: d += wd * p; buf = d on the first step (into `buf` when it exists,
// else a new buffer), else buf = momentum * buf + (1 - dampening) * d; d += momentum * buf (Nesterov)
// or d = buf; p -= lr * d.
void sgd_update(const torch::Tensor& p, torch::Tensor d, torch::Tensor& buf, bool first,
                const SGDOptions& o) {
  if (o.weight_decay() != 0) d.add_(p, o.weight_decay());
  if (o.momentum() != 0) {
    if (!first)
      buf.mul_(o.momentum()).add_(d, 1 - o.dampening());
    else if (buf.defined())
      buf.copy_(d);
    else
      buf = d.clone();
    if (o.nesterov())
      d.add_(buf, o.momentum());
    else
      d = buf;
  }
  p.add_(d, -o.lr());
}
}  // namespace

// [Fused step] On the CPU in float32, one pass over the group ([One pass], flat_kernels.h). Elsewhere
// (GPUs, other dtypes) sgd_update on the whole group, in place on the flat gradients (a bucket-sized
// temporary per operation cost more than the dispatches saved, measured on resnext50_32x4d).
void FusedSGD::step_group(FlatGroup& g, const SGDOptions& o) {
  const bool first = o.momentum() != 0 && !g.state_ready;  // SGD's first step: buf = d
  torch::Tensor& buf = g.state[0];
  if (g.cpu_float32())
    sgd_one_pass(g.params.data_ptr<float>(), g.grads.data_ptr<float>(), buf.data_ptr<float>(),
                 g.params.numel(),
                 {o.lr(), o.weight_decay(), o.momentum(), o.dampening(), o.nesterov(), first});
  else
    sgd_update(g.params, g.grads, buf, first, o);
  if (first) layout_.create_states(g, state_, kind_, [] { return std::make_unique<SGDParamState>(); });
}

// The parameters outside any group, one by one; their .grad is left as it was.
void FusedSGD::step_loose(const SGDOptions& o) {
  for (auto p : layout_.loose()) {
    if (!p.grad().defined()) continue;
    const auto key = state_key(p);
    auto it = state_.find(key);
    const bool first = it == state_.end();
    torch::Tensor buf;
    if (!first) buf = static_cast<SGDParamState&>(*it->second).momentum_buffer();
    sgd_update(p, p.grad().clone(), buf, first, o);
    if (first && o.momentum() != 0) {
      auto st = std::make_unique<SGDParamState>();
      st->momentum_buffer(buf);
      state_[key] = std::move(st);
    }
  }
}

torch::Tensor FusedSGD::step(LossClosure closure) {
  const auto& o = static_cast<const SGDOptions&>(param_groups()[0].options());
  return fused_step(
      closure, param_groups()[0].params(), state_, kind_, [&](FlatGroup& g) { step_group(g, o); },
      [&] { step_loose(o); });
}

}  // namespace rx::optim
