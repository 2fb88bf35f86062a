#include "common/optim/flat_groups.h"

#include <algorithm>
#include <map>

#include "common/parallel/reducer.h"
#include "common/util/error.h"

namespace rx::optim {

StateKey state_key(const torch::Tensor& p) {
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

torch::Tensor FlatGroup::view(const torch::Tensor& flat, const FlatMember& m) const {
  auto alias = torch::empty({0}, flat.options());
  alias.set_(flat.storage(), flat.storage_offset() + m.offset, m.param.sizes(), m.param.strides());
  return alias;
}

bool FlatLayout::valid(const std::vector<torch::Tensor>& params, const StateMap& state,
                       const FlatState& kind) const {
  if (!built_ || params.size() != param_count_) return false;
  for (const auto& g : groups_)
    for (const auto& m : g.members) {
      const auto& grad = m.param.grad();
      if (!grad.defined() || grad.data_ptr() != slice_ptr(g.grads, m.offset) ||
          m.param.data_ptr() != slice_ptr(g.params, m.offset))
        return false;
      auto it = state.find(m.key);
      const bool has_state = it != state.end();
      if (has_state != g.state_ready) return false;
      if (!has_state) continue;
      const auto buffers = kind.read(*it->second);
      if (buffers.size() != g.state.size()) return false;
      for (size_t b = 0; b < buffers.size(); ++b)
        if (!buffers[b].defined() || buffers[b].data_ptr() != slice_ptr(g.state[b], m.offset)) return false;
    }
  for (size_t i = 0; i < loose_.size(); ++i)
    if (loose_[i].grad().defined() != loose_had_grad_[i]) return false;
  return true;
}

void FlatLayout::build(const std::vector<torch::Tensor>& params, StateMap& state, const FlatState& kind) {
  torch::NoGradGuard no_grad;
  built_ = false;  // until the end: a build that throws leaves no layout to trust
  groups_.clear();
  loose_.clear();
  // Parameters by the storage their gradient lives in (eligible for a group or not), ordered by offset.
  auto eligible = [](const torch::Tensor& p) {
    const auto& g = p.grad();
    return g.defined() && !g.is_sparse() && p.numel() > 0 && g.is_non_overlapping_and_dense() &&
           p.is_non_overlapping_and_dense() && g.strides() == p.strides() &&
           g.scalar_type() == p.scalar_type();
  };
  std::map<const void*, std::vector<torch::Tensor>> by_storage;
  for (const auto& p : params) {
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
    // zero (checked: a storage that is not the reducer's may hold something else there), so the flat
    // operations keep it zero. An ineligible gradient in between ends the run.
    auto follows = [](const torch::Tensor& prev, const torch::Tensor& next) {
      const int64_t end = prev.grad().storage_offset() + prev.numel();
      const int64_t gap = next.grad().storage_offset() - end;
      if (gap < 0 || gap * next.grad().element_size() >= parallel::kSliceAlignBytes) return false;
      if (gap == 0) return true;
      auto padding = torch::empty({0}, next.grad().options());
      padding.set_(next.grad().storage(), end, {gap}, {1});
      return padding.eq(0).all().item<bool>();
    };
    size_t i = 0;
    while (i < ps.size()) {
      if (!eligible(ps[i])) {
        loose_.push_back(ps[i++]);
        continue;
      }
      size_t j = i + 1;
      while (j < ps.size() && eligible(ps[j]) && follows(ps[j - 1], ps[j])) ++j;
      // A group's states: all members have one (a loaded checkpoint, earlier steps) that can share the
      // group, or none has (the first step). Otherwise (e.g. Adam step counts that differ because a
      // parameter had no gradient for a while) the run keeps the per-parameter path.
      int with_state = 0;
      bool joinable = true;
      const torch::optim::OptimizerParamState* first_state = nullptr;
      for (size_t k = i; k < j; ++k) {
        auto it = state.find(state_key(ps[k]));
        if (it == state.end()) continue;
        ++with_state;
        if (!first_state) first_state = it->second.get();
        joinable = joinable && kind.joinable(*first_state, *it->second);
      }
      const bool mixed = with_state != 0 && with_state != static_cast<int>(j - i);
      if (j - i < 2 || mixed || !joinable) {
        for (size_t k = i; k < j; ++k) loose_.push_back(ps[k]);
        i = j;
        continue;
      }
      FlatGroup g;
      const auto& first = ps[i].grad();
      const int64_t base = first.storage_offset();
      for (size_t k = i; k < j; ++k)
        g.members.push_back({ps[k], ps[k].grad().storage_offset() - base, state_key(ps[k])});
      const int64_t total = g.members.back().offset + g.members.back().param.numel();
      g.grads = torch::empty({0}, first.options());
      g.grads.set_(first.storage(), base, {total}, {1});
      g.params = torch::zeros({total}, ps[i].options());  // the padding stays zero
      g.state_ready = with_state > 0;
      for (int b = 0; b < kind.buffers(); ++b) g.state.push_back(torch::zeros({total}, ps[i].options()));
      for (auto& m : g.members) {
        g.view(g.params, m).copy_(m.param);
        // set_data(), not set_(): set_() on a leaf drops its gradient accumulator, and with it the
        // reducer's ready hooks ([Ready hook]); set_data() keeps it (same device and dtype).
        m.param.set_data(g.view(g.params, m));
        if (!g.state_ready) continue;
        auto& s = *state.at(m.key);
        const auto loaded = kind.read(s);
        std::vector<torch::Tensor> aliases;
        for (int b = 0; b < kind.buffers(); ++b) {
          aliases.push_back(g.view(g.state[b], m));
          if (!loaded[b].defined()) continue;
          RX_CHECK(loaded[b].sizes() == m.param.sizes(),
                   "optimizer state of shape " << loaded[b].sizes() << " for a parameter of shape "
                                               << m.param.sizes());
          aliases.back().copy_(loaded[b]);  // the loaded values, in the parameter's layout
        }
        kind.point(s, std::move(aliases));
      }
      groups_.push_back(std::move(g));
      i = j;
    }
  }
  loose_had_grad_.clear();
  for (const auto& p : loose_) loose_had_grad_.push_back(p.grad().defined());
  param_count_ = params.size();
  built_ = true;
}

}  // namespace rx::optim
