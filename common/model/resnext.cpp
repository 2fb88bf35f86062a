#include "common/model/resnext.h"

#include "common/model/fused_bn_relu.h"
#include "common/util/error.h"

namespace rx::model {
namespace nn = torch::nn;

namespace {
thread_local MacCounter* g_counter = nullptr;

torch::Tensor counted(nn::Conv2dImpl& conv, const torch::Tensor& x) {
  auto y = conv.forward(x);
  if (g_counter) MacCounter::add(conv.weight.numel() * y.size(0) * y.size(2) * y.size(3));
  return y;
}

nn::Conv2d make_conv(int in, int out, int k, int stride, int groups = 1) {
  return nn::Conv2d(nn::Conv2dOptions(in, out, k).stride(stride).padding(k / 2).groups(groups).bias(false));
}
}  // namespace

MacCounter::MacCounter() : previous_(g_counter) { g_counter = this; }
MacCounter::~MacCounter() { g_counter = previous_; }
void MacCounter::add(int64_t macs) {
  if (g_counter) g_counter->macs_ += macs;
}

BottleneckImpl::BottleneckImpl(int in_channels, int width, int out_channels, int groups, int stride,
                               bool fused_bn_relu)
    : fused_bn_relu_(fused_bn_relu) {
  conv1 = register_module("conv1", make_conv(in_channels, width, 1, 1));
  bn1 = register_module("bn1", nn::BatchNorm2d(width));
  // torchvision (ResNet v1.5) puts the stride on the grouped 3x3 conv.
  conv2 = register_module("conv2", make_conv(width, width, 3, stride, groups));
  bn2 = register_module("bn2", nn::BatchNorm2d(width));
  conv3 = register_module("conv3", make_conv(width, out_channels, 1, 1));
  bn3 = register_module("bn3", nn::BatchNorm2d(out_channels));
  if (stride != 1 || in_channels != out_channels) {
    downsample = register_module("downsample", nn::Sequential(make_conv(in_channels, out_channels, 1, stride),
                                                              nn::BatchNorm2d(out_channels)));
  }
}

torch::Tensor BottleneckImpl::forward(const torch::Tensor& x) {
  auto out = bn_relu(counted(*conv1, x), *bn1, {}, fused_bn_relu_);
  out = bn_relu(counted(*conv2, out), *bn2, {}, fused_bn_relu_);
  torch::Tensor identity = x;
  if (!downsample.is_empty()) {
    identity = downsample[1]->as<nn::BatchNorm2d>()->forward(counted(*downsample[0]->as<nn::Conv2d>(), x));
  }
  return bn_relu(counted(*conv3, out), *bn3, identity, fused_bn_relu_);
}

ResNeXtImpl::ResNeXtImpl(const ResNeXtSpec& spec) : spec_(spec) {
  validate(spec_);
  const bool imagenet = spec_.stem == StemKind::kImageNet;
  conv1 = register_module(
      "conv1",
      imagenet
          ? nn::Conv2d(
                nn::Conv2dOptions(spec_.in_channels, spec_.stem_channels, 7).stride(2).padding(3).bias(false))
          : make_conv(spec_.in_channels, spec_.stem_channels, 3, 1));
  bn1 = register_module("bn1", nn::BatchNorm2d(spec_.stem_channels));
  int in = spec_.stem_channels;
  for (size_t s = 0; s < spec_.blocks.size(); ++s) {
    nn::Sequential stage;
    const int out = spec_.stage_out_channels(static_cast<int>(s));
    const int width = spec_.stage_width(static_cast<int>(s));
    for (int b = 0; b < spec_.blocks[s]; ++b) {
      stage->push_back(Bottleneck(in, width, out, spec_.cardinality,
                                  b == 0 ? spec_.stage_stride(static_cast<int>(s)) : 1, spec_.fused_bn_relu));
      in = out;
    }
    stages_.push_back(register_module("layer" + std::to_string(s + 1), stage));
  }
  fc = register_module("fc", nn::Linear(in, spec_.num_classes));
  init_weights();
}

void ResNeXtImpl::init_weights() {
  torch::NoGradGuard no_grad;
  for (auto& m : modules(/*include_self=*/false)) {
    if (auto* conv = m->as<nn::Conv2d>()) {
      nn::init::kaiming_normal_(conv->weight, 0.0, torch::kFanOut, torch::kReLU);
    } else if (auto* bn = m->as<nn::BatchNorm2d>()) {
      nn::init::ones_(bn->weight);
      nn::init::zeros_(bn->bias);
    }
  }
  if (spec_.zero_init_residual) {
    for (auto& m : modules(false))
      if (auto* block = m->as<BottleneckImpl>()) nn::init::zeros_(block->last_bn()->weight);
  }
  // The Linear head keeps LibTorch's default init, which is torchvision's (kaiming-uniform a=sqrt(5)).
}

void ResNeXtImpl::reset_head(int num_classes) {
  if (num_classes <= 0)
    throw ConfigError("model.num_classes", "must be positive, got " + std::to_string(num_classes));
  spec_.num_classes = num_classes;
  fc = replace_module("fc", nn::Linear(fc->options.in_features(), num_classes));
}

torch::Tensor ResNeXtImpl::stem_forward(const torch::Tensor& x) {
  if (x.dim() != 4 || x.size(1) != spec_.in_channels)
    throw ConfigError("data.input", "the model expects [N, " + std::to_string(spec_.in_channels) +
                                        ", H, W] input, got " + std::to_string(x.dim()) + "-d tensor with " +
                                        (x.dim() >= 2 ? std::to_string(x.size(1)) : std::string("?")) +
                                        " channels");
  auto y = bn_relu(counted(*conv1, x), *bn1, {}, spec_.fused_bn_relu);
  if (spec_.stem == StemKind::kImageNet) y = torch::max_pool2d(y, 3, 2, 1);
  return y;
}

torch::Tensor ResNeXtImpl::head_forward(const torch::Tensor& last) {
  auto pooled = torch::adaptive_avg_pool2d(last, {1, 1}).flatten(1);
  auto y = fc->forward(pooled);
  MacCounter::add(fc->weight.numel() * pooled.size(0));
  return y;
}

torch::Tensor ResNeXtImpl::forward(const torch::Tensor& x) {
  auto y = stem_forward(x);
  for (auto& stage : stages_) y = stage->forward(y);
  return head_forward(y);
}

std::vector<torch::Tensor> ResNeXtImpl::features(const torch::Tensor& x) {
  std::vector<torch::Tensor> out;
  auto y = stem_forward(x);
  for (auto& stage : stages_) {
    y = stage->forward(y);
    out.push_back(y);
  }
  return out;
}

int64_t count_parameters(const torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

}  // namespace rx::model
