#pragma once
// [Device sums] A training step adds its loss and its count of correct predictions into tensors on
// the training device; the host reads them (.item(), which waits for the device) only at log windows,
// checkpoints and the end of the epoch. Reading them every step would drain the device's queue
// twice per step, and on a GPU the host could no longer queue step k+1 while the device runs step k.
// The sums start from the carried (resumed) values and add in the same order as a host sum would,
// in float64, so the epoch's figures are bit-identical to summing on the host.
#include <torch/torch.h>

#include <cstdint>

namespace rx::worker {

class StepSums {
 public:
  StepSums(const torch::Device& device, double loss_sum, int64_t correct)
      : loss_sum_(torch::full({}, loss_sum, torch::TensorOptions().dtype(torch::kDouble).device(device))),
        window_loss_(torch::zeros({}, torch::TensorOptions().dtype(torch::kDouble).device(device))),
        correct_(torch::full({}, correct, torch::TensorOptions().dtype(torch::kLong).device(device))) {}

  // `loss` is the batch mean, `n` the batch size.
  void add(const torch::Tensor& loss, const torch::Tensor& logits, const torch::Tensor& labels, int64_t n) {
    torch::NoGradGuard no_grad;
    const auto l = loss.detach().to(torch::kDouble);
    loss_sum_.add_(l * static_cast<double>(n));
    window_loss_.add_(l);
    correct_.add_(logits.detach().argmax(1).eq(labels).sum());
  }

  // Copies the running sums into the host's epoch statistics (waits for the device).
  template <typename Stats>
  void store(Stats& s) const {
    s.loss_sum = loss_sum_.item<double>();
    s.correct = correct_.item<int64_t>();
  }

  // The sum of batch losses since the last call (waits for the device), and starts a new window.
  double take_window_loss() {
    const double v = window_loss_.item<double>();
    window_loss_.zero_();
    return v;
  }

 private:
  torch::Tensor loss_sum_, window_loss_, correct_;
};

}  // namespace rx::worker
