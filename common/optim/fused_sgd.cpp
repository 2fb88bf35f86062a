#include "common/optim/fused_sgd.h"

#include <algorithm>
#include <map>

#include "common/parallel/reducer.h"
#include "common/util/error.h"

namespace rx::optim {

using torch::optim::SGDOptions;
using torch::optim::SGDParamState;

FusedSGD::FusedSGD(std::vector<torch::Tensor> params, SGDOptions options) : SGD(std::move(params), options) {
  RX_CHECK(param_groups().size() == 1, "FusedSGD takes one parameter group");
}

FusedSGD::StateKey FusedSGD::state_key(const torch::Tensor& p) {
#if TORCH_VERSION_MAJOR >= 2
  return p.unsafeGetTensorImpl();
#else
  return c10::guts::to_string(p.unsafeGetTensorImpl());
#endif
}

namespace {
const void* slice_ptr(const torch::Tensor& flat, int64_t offset) {
  return static_cast<const char*>(flat.data_ptr()) + offset * flat.element_size();
}
}  // namespace

// Cheap (no tensor operation): every member still aliases its slices.
bool FusedSGD::layout_valid() const {
  if (!built_) return false;
  for (const auto& g : groups_)
    for (const auto& m : g.members) {
      const auto& grad = m.param.grad();
      if (!grad.defined() || grad.data_ptr() != slice_ptr(g.grads, m.offset) ||
          m.param.data_ptr() != slice_ptr(g.params, m.offset))
        return false;
      auto it = state_.find(m.key);
      const bool has_state = it != state_.end();
      if (has_state != g.momentum_ready) return false;
      if (has_state && static_cast<SGDParamState&>(*it->second).momentum_buffer().data_ptr() !=
                           slice_ptr(g.momentum, m.offset))
        return false;
    }
  for (const auto& p : loose_)
    if (!p.grad().defined()) return false;  // a parameter that had none may now belong to a group
  return true;
}

void FusedSGD::build_groups() {
  torch::NoGradGuard no_grad;
  groups_.clear();
  loose_.clear();
  // Parameters by the storage their gradient lives in (eligible for a group or not), ordered by offset.
  auto eligible = [](const torch::Tensor& p) {
    const auto& g = p.grad();
    return g.defined() && !g.is_sparse() && g.is_non_overlapping_and_dense() &&
           p.is_non_overlapping_and_dense() && g.strides() == p.strides() &&
           g.scalar_type() == p.scalar_type();
  };
  std::map<const void*, std::vector<torch::Tensor>> by_storage;
  for (const auto& p : param_groups()[0].params()) {
    if (p.grad().defined() && !p.grad().is_sparse())
      by_storage[p.grad().storage().unsafeGetStorageImpl()].push_back(p);
    else
      loose_.push_back(p);
  }
  for (auto& [storage, ps] : by_storage) {
    std::sort(ps.begin(), ps.end(), [](const torch::Tensor& a, const torch::Tensor& b) {
      return a.grad().storage_offset() < b.grad().storage_offset();
    });
    // [Group runs] A group is a maximal run of eligible gradients in offset order, each starting at or
    // after the previous one's end, with at most the reducer's alignment padding between them
    // ([Aligned slices] in common/parallel/reducer.cpp). The padding belongs to no parameter and is
    // zero, so the flat operations keep it zero. An ineligible gradient in between ends the run.
    auto follows = [](const torch::Tensor& prev, const torch::Tensor& next) {
      const int64_t end = prev.grad().storage_offset() + prev.numel();
      const int64_t gap = next.grad().storage_offset() - end;
      return gap >= 0 && gap * next.grad().element_size() < parallel::kSliceAlignBytes;
    };
    size_t i = 0;
    while (i < ps.size()) {
      if (!eligible(ps[i])) {
        loose_.push_back(ps[i++]);
        continue;
      }
      size_t j = i + 1;
      while (j < ps.size() && eligible(ps[j]) && follows(ps[j - 1], ps[j])) ++j;
      if (j - i < 2) {
        loose_.push_back(ps[i]);
        i = j;
        continue;
      }
      Group g;
      const auto& first = ps[i].grad();
      const int64_t base = first.storage_offset();
      for (size_t k = i; k < j; ++k)
        g.members.push_back({ps[k], ps[k].grad().storage_offset() - base, state_key(ps[k])});
      const int64_t total = g.members.back().offset + g.members.back().param.numel();
      g.grads = torch::empty({0}, first.options());
      g.grads.set_(first.storage(), base, {total}, {1});
      g.params = torch::zeros({total}, ps[i].options());  // the padding stays zero
      // Momentum: all members have a buffer (a loaded checkpoint, earlier steps) or none (first step).
      int with_state = 0;
      for (const auto& m : g.members) with_state += state_.count(m.key) ? 1 : 0;
      const bool partial = with_state != 0 && with_state != static_cast<int>(g.members.size());
      if (partial) {  // cannot happen with one optimizer over a whole model; keep SGD's own path
        for (const auto& m : g.members) loose_.push_back(m.param);
        i = j;
        continue;
      }
      g.momentum_ready = with_state > 0;
      g.momentum = torch::zeros({total}, ps[i].options());
      for (auto& m : g.members) {
        auto slice = g.params.narrow(0, m.offset, m.param.numel());
        slice.copy_(m.param.as_strided({m.param.numel()}, {1}));  // dense: its storage order
        // set_data(), not set_(): set_() on a leaf drops its gradient accumulator, and with it the
        // reducer's ready hooks ([Ready hook]); set_data() keeps it (same device and dtype).
        auto slot = torch::empty({0}, g.params.options());
        slot.set_(g.params.storage(), m.offset, m.param.sizes(), m.param.strides());
        m.param.set_data(slot);
        if (g.momentum_ready) {  // the loaded buffer's values, in the parameter's layout
          auto& st = static_cast<SGDParamState&>(*state_.at(m.key));
          auto alias = torch::empty({0}, g.momentum.options());
          alias.set_(g.momentum.storage(), m.offset, m.param.sizes(), m.param.strides());
          alias.copy_(st.momentum_buffer());
          st.momentum_buffer(alias);
        }
      }
      groups_.push_back(std::move(g));
      i = j;
    }
  }
  built_ = true;
}

// [Fused step] In place on the flat gradients: d = g + wd * p and the Nesterov d + momentum * m are
// written over g, so a step allocates nothing (a bucket-sized temporary per operation cost more
// than the dispatches saved, measured on resnext50_32x4d). .grad therefore holds the applied update
// direction after step(), until zero_grad().
void FusedSGD::step_group(Group& g, const SGDOptions& o) {
  torch::Tensor d = g.grads;
  if (o.weight_decay() != 0) d.add_(g.params, o.weight_decay());
  if (o.momentum() != 0) {
    if (!g.momentum_ready) {  // SGD's first step: buf = d
      g.momentum.copy_(d);
      for (const auto& m : g.members) {
        auto alias = torch::empty({0}, g.momentum.options());
        alias.set_(g.momentum.storage(), m.offset, m.param.sizes(), m.param.strides());
        auto st = std::make_unique<SGDParamState>();
        st->momentum_buffer(alias);
        state_[m.key] = std::move(st);
      }
      g.momentum_ready = true;
    } else {
      g.momentum.mul_(o.momentum()).add_(d, 1 - o.dampening());
    }
    if (o.nesterov())
      d.add_(g.momentum, o.momentum());
    else
      d = g.momentum;
  }
  g.params.add_(d, -o.lr());
}

// torch::optim::SGD::step's arithmetic for the parameters outside any group.
void FusedSGD::step_loose(const SGDOptions& o) {
  for (auto& p : loose_) {
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
  torch::NoGradGuard no_grad;
  torch::Tensor loss;
  if (closure) {
    torch::AutoGradMode enable(true);
    loss = closure();
  }
  if (!layout_valid()) build_groups();
  const auto& o = static_cast<const SGDOptions&>(param_groups()[0].options());
  for (auto& g : groups_) step_group(g, o);
  step_loose(o);
  return loss;
}

}  // namespace rx::optim
