#include "common/optim/fused_adam.h"

#include <cmath>

#include "common/optim/flat_kernels.h"
#include "common/util/error.h"

namespace rx::optim {
namespace {

// torch::optim::Adam / AdamW's update of one parameter, or of one flat group: the same operations in
// the same order, so the two agree within rounding. A flat group's gradient buffer takes Adam's weight
// decay in place (`grad_in_place`); a loose parameter's own .grad is left as it is, as LibTorch does.
// `denom` is a buffer for the denominator, or undefined to allocate one.
template <bool kDecoupled, class Options>
void adam_update(const Options& o, int64_t step, torch::Tensor p, torch::Tensor grad, bool grad_in_place,
                 torch::Tensor exp_avg, torch::Tensor exp_avg_sq, torch::Tensor max_exp_avg_sq,
                 torch::Tensor denom) {
  if (o.weight_decay() != 0) {
    if constexpr (kDecoupled)
      p.mul_(1 - o.lr() * o.weight_decay());
    else
      grad = grad_in_place ? grad.add_(p, o.weight_decay()) : grad.add(p, o.weight_decay());
  }
  const auto [beta1, beta2] = o.betas();
  const double correction1 = 1 - std::pow(beta1, step);
  const double correction2 = 1 - std::pow(beta2, step);
  exp_avg.mul_(beta1).add_(grad, 1 - beta1);
  exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2);
  torch::Tensor second = exp_avg_sq;
  if (o.amsgrad()) {
    torch::max_out(max_exp_avg_sq, exp_avg_sq, max_exp_avg_sq);
    second = max_exp_avg_sq;
  }
  if (denom.defined())
    torch::sqrt_out(denom, second);
  else
    denom = second.sqrt();
  denom.div_(std::sqrt(correction2)).add_(o.eps());
  p.addcdiv_(exp_avg, denom, -o.lr() / correction1);
}

}  // namespace

template <class Base>
FusedAdamT<Base>::FusedAdamT(std::vector<torch::Tensor> params, Options options)
    : Base(std::move(params), options), kind_(options.amsgrad()) {
  RX_CHECK(this->param_groups().size() == 1, "FusedAdam takes one parameter group");
}

template <class Base>
std::vector<torch::Tensor> FusedAdamT<Base>::MomentState::read(
    const torch::optim::OptimizerParamState& s) const {
  const auto& a = static_cast<const ParamState&>(s);
  std::vector<torch::Tensor> out{a.exp_avg(), a.exp_avg_sq()};
  if (amsgrad_) out.push_back(a.max_exp_avg_sq());
  return out;
}

template <class Base>
void FusedAdamT<Base>::MomentState::point(torch::optim::OptimizerParamState& s,
                                          std::vector<torch::Tensor> aliases) const {
  auto& a = static_cast<ParamState&>(s);
  a.exp_avg(aliases[0]);
  a.exp_avg_sq(aliases[1]);
  if (amsgrad_) a.max_exp_avg_sq(aliases[2]);
}

template <class Base>
bool FusedAdamT<Base>::MomentState::joinable(const torch::optim::OptimizerParamState& a,
                                             const torch::optim::OptimizerParamState& b) const {
  return static_cast<const ParamState&>(a).step() == static_cast<const ParamState&>(b).step();
}

template <class Base>
void FusedAdamT<Base>::step_group(FlatGroup& g, const Options& o) {
  if (!g.state_ready) {  // Adam's first step: zero moments (the flat buffers start zeroed), step 0
    layout_.create_states(g, this->state_, kind_, [] {
      auto st = std::make_unique<ParamState>();
      st->step(0);
      return st;
    });
  }
  const int64_t step = static_cast<ParamState&>(*this->state_.at(g.members[0].key)).step() + 1;
  if (g.cpu_float32()) {
    adam_one_pass(g.params.data_ptr<float>(), g.grads.data_ptr<float>(), g.state[0].data_ptr<float>(),
                  g.state[1].data_ptr<float>(), g.state.size() == 3 ? g.state[2].data_ptr<float>() : nullptr,
                  g.params.numel(),
                  {o.lr(), std::get<0>(o.betas()), std::get<1>(o.betas()), o.eps(), o.weight_decay(), step,
                   kDecoupled});
  } else {
    const int64_t n = g.params.numel();
    if (!scratch_.defined() || scratch_.numel() < n || scratch_.device() != g.params.device() ||
        scratch_.scalar_type() != g.params.scalar_type())
      scratch_ = torch::empty({n}, g.params.options());
    adam_update<kDecoupled>(o, step, g.params, g.grads, /*grad_in_place=*/true, g.state[0], g.state[1],
                            g.state.size() == 3 ? g.state[2] : torch::Tensor(), scratch_.narrow(0, 0, n));
  }
  for (const auto& m : g.members) static_cast<ParamState&>(*this->state_.at(m.key)).step(step);
}

template <class Base>
void FusedAdamT<Base>::step_loose(const Options& o) {
  for (auto p : layout_.loose()) {
    if (!p.grad().defined()) continue;
    TORCH_CHECK(!p.grad().is_sparse(), "Adam does not support sparse gradients");
    const auto key = state_key(p);
    auto it = this->state_.find(key);
    if (it == this->state_.end()) {
      auto st = std::make_unique<ParamState>();
      st->step(0);
      st->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
      st->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
      if (o.amsgrad()) st->max_exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
      it = this->state_.emplace(key, std::move(st)).first;
    }
    auto& s = static_cast<ParamState&>(*it->second);
    if (o.amsgrad() && !s.max_exp_avg_sq().defined())  // AMSGrad turned on by a loaded checkpoint's options
      s.max_exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
    s.step(s.step() + 1);
    adam_update<kDecoupled>(o, s.step(), p, p.grad(), /*grad_in_place=*/false, s.exp_avg(), s.exp_avg_sq(),
                            s.max_exp_avg_sq(), torch::Tensor());
  }
}

template <class Base>
torch::Tensor FusedAdamT<Base>::step(torch::optim::Optimizer::LossClosure closure) {
  const auto& o = static_cast<const Options&>(this->param_groups()[0].options());
  kind_ = MomentState(o.amsgrad());  // a loaded checkpoint may bring other options (LibTorch 2)
  return this->fused_step(
      closure, this->param_groups()[0].params(), this->state_, kind_, [&](FlatGroup& g) { step_group(g, o); },
      [&] { step_loose(o); });
}

template class FusedAdamT<torch::optim::Adam>;
template class FusedAdamT<torch::optim::AdamW>;

}  // namespace rx::optim
