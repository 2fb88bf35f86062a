#pragma once
// The ResNeXt network in LibTorch. One module class serves both the CIFAR (Xie et al. 2017) and the
// ImageNet (torchvision) variants; parameter names follow torchvision (conv1, bn1, layer1.0.conv1,
// ..., layerN.k.downsample.{0,1}, fc) so torchvision state_dicts load by name.
#include <torch/nn.h>

#include <vector>

#include "common/model/resnext_spec.h"

namespace rx::model {

class BottleneckImpl : public torch::nn::Module {
 public:
  BottleneckImpl(int in_channels, int width, int out_channels, int groups, int stride,
                 bool fused_bn_relu = false);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::BatchNorm2d last_bn() const { return bn3; }

 private:
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
  torch::nn::Sequential downsample{nullptr};  // 1x1 conv + BN when shape changes, else absent
  bool fused_bn_relu_ = false;
};
TORCH_MODULE(Bottleneck);

class ResNeXtImpl : public torch::nn::Module {
 public:
  explicit ResNeXtImpl(const ResNeXtSpec& spec);

  // Logits [N, num_classes].
  torch::Tensor forward(const torch::Tensor& x);
  // Every stage's output feature map, in order (strides 1,2,4 for CIFAR; 4,8,16,32 for ImageNet),
  // for use as a detection backbone.
  std::vector<torch::Tensor> features(const torch::Tensor& x);

  const ResNeXtSpec& spec() const { return spec_; }
  size_t num_stages() const { return stages_.size(); }
  torch::nn::Sequential stage(size_t i) const { return stages_.at(i); }
  torch::Tensor stem_forward(const torch::Tensor& x);
  torch::Tensor head_forward(const torch::Tensor& last_stage_output);

  // Replace the classifier with a freshly initialised one of `num_classes` outputs (fine-tuning).
  void reset_head(int num_classes);

 private:
  void init_weights();

  ResNeXtSpec spec_;
  torch::nn::Conv2d conv1{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr};
  std::vector<torch::nn::Sequential> stages_;
  torch::nn::Linear fc{nullptr};
};
TORCH_MODULE(ResNeXt);

int64_t count_parameters(const torch::nn::Module& m);

// [MAC counting] Multiply-accumulates are measured, not looked up: while a MacCounter is alive on
// this thread, every conv and linear run by the model adds weight.numel() * output positions.
class MacCounter {
 public:
  MacCounter();
  ~MacCounter();
  MacCounter(const MacCounter&) = delete;
  MacCounter& operator=(const MacCounter&) = delete;
  int64_t macs() const { return macs_; }
  void reset() { macs_ = 0; }
  static void add(int64_t macs);

 private:
  int64_t macs_ = 0;
  MacCounter* previous_;
};

}  // namespace rx::model
