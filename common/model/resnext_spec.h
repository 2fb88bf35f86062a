#pragma once
// What a ResNeXt is, as data: the spec a model is built from, the named presets, and validation that
// names the config key at fault. Torch-free, so the coordinator can validate job configs too.
#include <string>
#include <vector>

namespace rx::model {

enum class StemKind {
  kCifar,     // 3x3 conv stride 1 (Xie et al. 2017, CIFAR section); no max-pool
  kImageNet,  // 7x7 conv stride 2 + 3x3 max-pool stride 2 (torchvision's resnext50/101)
};

struct ResNeXtSpec {
  std::string name = "custom";
  StemKind stem = StemKind::kCifar;
  std::vector<int> blocks = {3, 3, 3};  // bottleneck blocks per stage
  int cardinality = 8;                  // C: groups of the 3x3 conv
  int base_width = 64;                  // d: channels per group in the first stage (paper's "8x64d")
  // Alternative to base_width: the total width of the first stage's grouped conv (doubling per
  // stage). 0 = derive from base_width. Must be a multiple of the cardinality.
  int bottleneck_width = 0;
  int stem_channels = 64;
  int base_planes = 64;  // stage s has planes base_planes * 2^s and outputs 4x that (widen factor 4)
  int in_channels = 3;
  int num_classes = 10;
  bool zero_init_residual = false;  // zero each block's last BN gamma
  // Each BN that a ReLU follows runs fused with it, and with the residual add ([Fused BN-ReLU],
  // fused_bn_relu.h): same network, same parameters, equal up to float rounding.
  bool fused_bn_relu = false;

  // Bottleneck width (channels of the grouped conv) in stage s: floor(planes * d / 64) * C, or
  // bottleneck_width * 2^s when that is set.
  int stage_width(int stage) const;
  int stage_planes(int stage) const { return base_planes << stage; }
  int stage_out_channels(int stage) const { return stage_planes(stage) * 4; }
  int stage_stride(int stage) const { return stage == 0 ? 1 : 2; }
  int stem_stride() const { return stem == StemKind::kCifar ? 1 : 4; }  // conv stride x pool stride
};

// Throws ConfigError naming "model.<field>" for anything that cannot build a network.
void validate(const ResNeXtSpec& spec);

// A CIFAR-style ResNeXt of the given depth: (depth - 2) must be a positive multiple of 9.
ResNeXtSpec cifar_spec(int depth, int cardinality, int base_width);

// Named presets: resnext29_8x64d, resnext29_16x64d, resnext29_4x16d, resnext11_4x16d, resnext20_tiny,
// resnext50_32x4d, resnext101_32x8d. Unknown name -> ConfigError("model.preset").
ResNeXtSpec preset(const std::string& name);
std::vector<std::string> preset_names();

}  // namespace rx::model
