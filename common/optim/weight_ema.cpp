#include "common/optim/weight_ema.h"

#include <algorithm>
#include <string>

#include "common/util/error.h"

namespace rx::optim {

std::vector<torch::Tensor> ema_tensors(torch::nn::Module& model) {
  std::vector<torch::Tensor> out = model.parameters();
  for (auto& b : model.buffers()) out.push_back(b);
  return out;
}

WeightEma::WeightEma(torch::nn::Module& model, double decay) : model_(model), decay_(decay) {
  RX_CHECK(decay > 0 && decay < 1, "EMA decay must be in (0, 1), got " << decay);
  restart();
}

void WeightEma::restart() {
  torch::NoGradGuard no_grad;
  avg_.clear();
  for (auto& t : ema_tensors(model_)) avg_.push_back(t.detach().clone());
  updates_ = 0;
}

double WeightEma::next_decay() const {
  const double t = static_cast<double>(updates_ + 1);
  return std::min(decay_, (1 + t) / (10 + t));
}

void WeightEma::update() {
  torch::NoGradGuard no_grad;
  const double d = next_decay();
  const auto live = ema_tensors(model_);
  RX_CHECK(live.size() == avg_.size(),
           "the model has " << live.size() << " tensors, the EMA " << avg_.size());
  for (size_t i = 0; i < live.size(); ++i) {
    if (avg_[i].is_floating_point())
      avg_[i].mul_(d).add_(live[i], 1 - d);  // live[i] may be channels-last: add_ handles the strides
    else
      avg_[i].copy_(live[i]);
  }
  ++updates_;
}

WeightEma::Applied::Applied(WeightEma& ema) : ema_(ema) {
  torch::NoGradGuard no_grad;
  const auto live = ema_tensors(ema_.model_);
  for (size_t i = 0; i < live.size(); ++i) {
    saved_.push_back(live[i].detach().clone());
    live[i].copy_(ema_.avg_[i]);
  }
}

WeightEma::Applied::~Applied() {
  torch::NoGradGuard no_grad;
  const auto live = ema_tensors(ema_.model_);
  for (size_t i = 0; i < live.size(); ++i) {
    ema_.avg_[i].copy_(live[i]);
    live[i].copy_(saved_[i]);
  }
}

void WeightEma::save(torch::serialize::OutputArchive& archive) const {
  torch::serialize::OutputArchive ema;
  ema.write("updates", torch::tensor({updates_}, torch::kInt64));
  for (size_t i = 0; i < avg_.size(); ++i) ema.write("t" + std::to_string(i), avg_[i]);
  archive.write("ema", ema);
}

bool WeightEma::load(torch::serialize::InputArchive& archive) {
  torch::serialize::InputArchive ema;
  if (!archive.try_read("ema", ema)) return false;
  torch::NoGradGuard no_grad;
  torch::Tensor updates;
  ema.read("updates", updates);
  for (size_t i = 0; i < avg_.size(); ++i) {
    torch::Tensor t;
    if (!ema.try_read("t" + std::to_string(i), t) || !t.sizes().equals(avg_[i].sizes()))
      throw Error("the checkpoint's weight average does not fit this model (tensor " + std::to_string(i) +
                  ")");
    avg_[i].copy_(t);
  }
  updates_ = updates.item<int64_t>();
  return true;
}

}  // namespace rx::optim
