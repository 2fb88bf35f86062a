#pragma once
// [Weight EMA] An exponential moving average of a model's parameters and floating-point buffers
// (BatchNorm running statistics), updated after every optimizer step:
//
//   avg = d_t * avg + (1 - d_t) * w,   d_t = min(decay, (1 + t) / (10 + t)),   t = 1, 2, ...
//
// The warm-up term (TensorFlow's ExponentialMovingAverage with num_updates) keeps the average from
// carrying the random initial weights through a short run; from t ~ 10 / (1 - decay) on, d_t = decay.
// Integer buffers (BatchNorm's num_batches_tracked) are copied, not averaged. The update is a fixed
// sequence of element-wise ops on the weights' device and dtype, so replicas that hold the same
// weights hold the same average, bit for bit, and a resumed run continues it exactly (save/load).
//
// The model's tensors are looked up at every call rather than kept: the fused optimizer and a
// checkpoint load both replace the parameters' storage after the average is created.
#include <torch/torch.h>

#include <cstdint>
#include <vector>

namespace rx::optim {

class WeightEma {
 public:
  // Starts the average at the model's current values. decay in (0, 1).
  WeightEma(torch::nn::Module& model, double decay);

  // One update from the model's current values; call after each optimizer step.
  void update();

  int64_t updates() const { return updates_; }
  // d_t of the next update (t = updates() + 1).
  double next_decay() const;

  // While alive, the model holds the averaged values; destruction writes any change made to them in
  // between (e.g. a broadcast of BatchNorm statistics) back into the average and restores the
  // model's own values.
  class Applied {
   public:
    explicit Applied(WeightEma& ema);
    ~Applied();
    Applied(const Applied&) = delete;
    Applied& operator=(const Applied&) = delete;

   private:
    WeightEma& ema_;
    std::vector<torch::Tensor> saved_;
  };

  // Into / out of a checkpoint archive (a nested archive "ema"). load() returns false when the
  // archive has no average (written with the EMA off) and throws rx::Error for one of another shape.
  void save(torch::serialize::OutputArchive& archive) const;
  bool load(torch::serialize::InputArchive& archive);
  // Starts over from the model's current values (t = 0).
  void restart();

  const std::vector<torch::Tensor>& averages() const { return avg_; }

 private:
  torch::nn::Module& model_;
  double decay_;
  int64_t updates_ = 0;
  std::vector<torch::Tensor> avg_;  // parameters, then buffers, in the module's order
};

// The model's parameters followed by its buffers, the order WeightEma keeps them in.
std::vector<torch::Tensor> ema_tensors(torch::nn::Module& model);

}  // namespace rx::optim
