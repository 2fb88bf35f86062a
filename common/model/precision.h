#pragma once
// Numerics of a training step: the arithmetic precision (autocast), the dynamic loss scaler that fp16
// needs, and the channels-last memory format for the model's 4-D weights.
//
// [Mixed precision] `training.precision` bf16 or fp16 runs the forward pass (and the loss) under
// LibTorch's autocast for the model's device type; parameters, gradients, the all-reduce and the
// optimizer stay fp32 (the master weights are the parameters themselves). fp16 has 5 exponent bits, so
// small gradients underflow: its losses are multiplied by a dynamic scale before backward, and the
// gradients divided by it after the all-reduce. A step whose gradients hold inf/NaN is skipped (and
// counted) and the scale halves; after `growth_interval` good steps it doubles. The check runs on the
// all-reduced gradients, so every rank takes the same decision without another collective. bf16 has
// fp32's exponent range and needs no scaler.
#include <torch/torch.h>

#include <nlohmann/json.hpp>
#include <string>

namespace rx::model {

enum class Precision { kFp32, kBf16, kFp16 };

// "fp32" | "bf16" | "fp16"; anything else is a ConfigError naming training.precision.
Precision parse_precision(const std::string& name);
const char* precision_name(Precision p);

// Throws a ConfigError naming training.precision when `device` cannot run `p` under autocast
// (fp16 autocast needs CUDA).
void check_precision_supported(Precision p, const torch::Device& device);

// Autocast for `device`'s type at `p` while alive (nothing for fp32); restores the previous state.
class AutocastScope {
 public:
  AutocastScope(Precision p, const torch::Device& device);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool active_ = false;
  bool was_enabled_ = false;
  at::ScalarType previous_dtype_ = at::kFloat;
  at::DeviceType type_ = at::kCPU;
};

struct LossScalerOptions {
  double initial_scale = 65536.0;
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  int64_t growth_interval = 2000;
};

// [Mixed precision] fp16's dynamic loss scale; a no-op (scale 1, never skips) when disabled.
class LossScaler {
 public:
  explicit LossScaler(bool enabled, LossScalerOptions opts = {});
  bool enabled() const { return enabled_; }
  double scale() const { return scale_; }
  torch::Tensor scale_loss(const torch::Tensor& loss) const;
  // Divides the gradients by the scale; returns false (and backs off) if any is inf/NaN, in which
  // case the caller skips the optimizer step. Grows the scale after growth_interval good steps.
  bool unscale_and_update(const std::vector<torch::Tensor>& params);
  int64_t skipped_steps() const { return skipped_; }
  // Checkpointed so a resumed run continues with the same scale.
  nlohmann::json state() const;
  void load_state(const nlohmann::json& s);

 private:
  bool enabled_;
  LossScalerOptions opts_;
  double scale_;
  int64_t good_steps_ = 0;
  int64_t skipped_ = 0;
};

// Converts every 4-D parameter and buffer of `module` to channels-last in place (values unchanged).
void to_channels_last(torch::nn::Module& module);

}  // namespace rx::model
