#include "common/model/precision.h"

#include <ATen/autocast_mode.h>
#include <torch/version.h>

#include <cmath>

#include "common/util/error.h"

namespace rx::model {

Precision parse_precision(const std::string& name) {
  if (name == "fp32") return Precision::kFp32;
  if (name == "bf16") return Precision::kBf16;
  if (name == "fp16") return Precision::kFp16;
  throw ConfigError("training.precision", "\"" + name + "\" is not one of fp32, bf16, fp16");
}

const char* precision_name(Precision p) {
  switch (p) {
    case Precision::kBf16:
      return "bf16";
    case Precision::kFp16:
      return "fp16";
    default:
      return "fp32";
  }
}

void check_precision_supported(Precision p, const torch::Device& device) {
  if (p == Precision::kFp16 && !device.is_cuda())
    throw ConfigError("training.precision", "fp16 autocast needs a CUDA device (training runs on " +
                                                device.str() + "); use bf16 on CPUs");
}

// LibTorch 2.x keys autocast by device type; 1.13 (Debian's) has one pair of calls per device kind.
namespace {
#if TORCH_VERSION_MAJOR >= 2
bool autocast_enabled(at::DeviceType t) { return at::autocast::is_autocast_enabled(t); }
void set_autocast(at::DeviceType t, bool on) { at::autocast::set_autocast_enabled(t, on); }
at::ScalarType autocast_dtype(at::DeviceType t) { return at::autocast::get_autocast_dtype(t); }
void set_autocast_dtype(at::DeviceType t, at::ScalarType d) { at::autocast::set_autocast_dtype(t, d); }
#else
bool autocast_enabled(at::DeviceType t) {
  return t == at::kCUDA ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
}
void set_autocast(at::DeviceType t, bool on) {
  t == at::kCUDA ? at::autocast::set_enabled(on) : at::autocast::set_cpu_enabled(on);
}
at::ScalarType autocast_dtype(at::DeviceType t) {
  return t == at::kCUDA ? at::autocast::get_autocast_gpu_dtype() : at::autocast::get_autocast_cpu_dtype();
}
void set_autocast_dtype(at::DeviceType t, at::ScalarType d) {
  t == at::kCUDA ? at::autocast::set_autocast_gpu_dtype(d) : at::autocast::set_autocast_cpu_dtype(d);
}
#endif
}  // namespace

AutocastScope::AutocastScope(Precision p, const torch::Device& device) {
  if (p == Precision::kFp32) return;
  check_precision_supported(p, device);
  type_ = device.is_cuda() ? at::kCUDA : at::kCPU;
  was_enabled_ = autocast_enabled(type_);
  previous_dtype_ = autocast_dtype(type_);
  set_autocast_dtype(type_, p == Precision::kBf16 ? at::kBFloat16 : at::kHalf);
  set_autocast(type_, true);
  at::autocast::increment_nesting();
  active_ = true;
}

AutocastScope::~AutocastScope() {
  if (!active_) return;
  // The cast cache (fp32 weights cast once per forward) is dropped when the outermost scope ends,
  // as torch.autocast does: the weights change at every optimizer step.
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  set_autocast(type_, was_enabled_);
  set_autocast_dtype(type_, previous_dtype_);
}

LossScaler::LossScaler(bool enabled, LossScalerOptions opts)
    : enabled_(enabled), opts_(opts), scale_(enabled ? opts.initial_scale : 1.0) {}

torch::Tensor LossScaler::scale_loss(const torch::Tensor& loss) const {
  return enabled_ ? loss * scale_ : loss;
}

bool LossScaler::unscale_and_update(const std::vector<torch::Tensor>& params) {
  if (!enabled_) return true;
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> ok;  // one flag per gradient, read back once: a single device sync
  for (const auto& p : params) {
    auto g = p.grad();
    if (!g.defined()) continue;
    g.mul_(1.0 / scale_);
    ok.push_back(torch::isfinite(g).all());
  }
  if (!ok.empty() && !torch::stack(ok).all().item<bool>()) {
    ++skipped_;
    good_steps_ = 0;
    scale_ = std::max(1.0, scale_ * opts_.backoff_factor);
    return false;
  }
  if (++good_steps_ >= opts_.growth_interval) {
    good_steps_ = 0;
    scale_ = std::min(scale_ * opts_.growth_factor, 1.0e30);
  }
  return true;
}

nlohmann::json LossScaler::state() const {
  return {{"scale", scale_}, {"good_steps", good_steps_}, {"skipped_steps", skipped_}};
}

void LossScaler::load_state(const nlohmann::json& s) {
  if (!enabled_ || s.is_null()) return;
  scale_ = s.at("scale").get<double>();
  good_steps_ = s.at("good_steps").get<int64_t>();
  skipped_ = s.at("skipped_steps").get<int64_t>();
}

void to_channels_last(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  auto convert = [](torch::Tensor& t) {
    if (t.defined() && t.dim() == 4) t.set_data(t.contiguous(torch::MemoryFormat::ChannelsLast));
  };
  for (auto& p : module.parameters()) convert(p);
  for (auto& b : module.buffers()) convert(b);
}

}  // namespace rx::model
