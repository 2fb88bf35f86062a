#include "common/model/resnext_spec.h"

#include <map>

#include "common/util/error.h"

namespace rx::model {

int ResNeXtSpec::stage_width(int stage) const {
  if (bottleneck_width > 0) return bottleneck_width << stage;
  return static_cast<int>(static_cast<long long>(stage_planes(stage)) * base_width / 64) * cardinality;
}

static void require_positive(const char* field, long long v) {
  if (v <= 0) throw ConfigError(std::string("model.") + field, "must be positive, got " + std::to_string(v));
}

void validate(const ResNeXtSpec& s) {
  require_positive("cardinality", s.cardinality);
  require_positive("base_width", s.base_width);
  require_positive("stem_channels", s.stem_channels);
  require_positive("base_planes", s.base_planes);
  require_positive("in_channels", s.in_channels);
  require_positive("num_classes", s.num_classes);
  if (s.blocks.empty()) throw ConfigError("model.depth", "the network needs at least one stage");
  for (int b : s.blocks) require_positive("depth", b);
  if (s.cardinality > 4096) throw ConfigError("model.cardinality", "is unreasonably large (> 4096)");
  if (s.base_width > 4096) throw ConfigError("model.base_width", "is unreasonably large (> 4096)");
  if (s.num_classes > 1000000) throw ConfigError("model.num_classes", "is unreasonably large (> 1e6)");
  if (s.stem_channels > 4096 || s.base_planes > 4096)
    throw ConfigError(s.stem_channels > 4096 ? "model.stem_channels" : "model.base_planes",
                      "is unreasonably large");
  if (s.bottleneck_width < 0)
    throw ConfigError("model.bottleneck_width", "must be positive (or 0 for base_width)");
  if (s.bottleneck_width > 0) {
    if (s.bottleneck_width % s.cardinality != 0)
      throw ConfigError("model.cardinality", "cardinality " + std::to_string(s.cardinality) +
                                                 " does not divide the bottleneck width " +
                                                 std::to_string(s.bottleneck_width));
    return;
  }
  // floor(planes * d / 64) is the per-group width; it must not round to zero, or the grouped conv
  // would have no channels.
  if (static_cast<long long>(s.base_planes) * s.base_width < 64)
    throw ConfigError("model.base_width",
                      "base_planes * base_width / 64 rounds to 0 channels per group (base_planes " +
                          std::to_string(s.base_planes) + ", base_width " + std::to_string(s.base_width) +
                          ")");
}

ResNeXtSpec cifar_spec(int depth, int cardinality, int base_width) {
  if (depth < 11 || (depth - 2) % 9 != 0)
    throw ConfigError(
        "model.depth",
        "a CIFAR ResNeXt needs depth = 9n + 2 with n >= 1 (11, 20, 29, ...), got " + std::to_string(depth));
  ResNeXtSpec s;
  s.name = "resnext" + std::to_string(depth) + "_" + std::to_string(cardinality) + "x" +
           std::to_string(base_width) + "d";
  const int n = (depth - 2) / 9;
  s.blocks = {n, n, n};
  s.cardinality = cardinality;
  s.base_width = base_width;
  validate(s);
  return s;
}

static ResNeXtSpec imagenet_spec(const std::string& name, std::vector<int> blocks, int c, int d) {
  ResNeXtSpec s;
  s.name = name;
  s.stem = StemKind::kImageNet;
  s.blocks = std::move(blocks);
  s.cardinality = c;
  s.base_width = d;
  s.num_classes = 1000;
  return s;
}

static const std::map<std::string, ResNeXtSpec>& presets() {
  static const std::map<std::string, ResNeXtSpec> table = [] {
    std::map<std::string, ResNeXtSpec> t;
    t["resnext29_8x64d"] = cifar_spec(29, 8, 64);    // paper: 34.4M params
    t["resnext29_16x64d"] = cifar_spec(29, 16, 64);  // paper: 68.1M params
    t["resnext29_4x16d"] = cifar_spec(29, 4, 16);    // 3.2M: small CIFAR model for CPUs
    t["resnext11_4x16d"] = cifar_spec(11, 4, 16);    // 1.4M: one block per stage
    // ~150k params: the CPU workhorse for Fashion-MNIST (a few hundred images/s on 2 cores).
    auto tiny = cifar_spec(20, 4, 16);
    tiny.name = "resnext20_tiny";
    tiny.stem_channels = 32;
    tiny.base_planes = 16;
    t["resnext20_tiny"] = tiny;
    t["resnext50_32x4d"] = imagenet_spec("resnext50_32x4d", {3, 4, 6, 3}, 32, 4);
    t["resnext101_32x8d"] = imagenet_spec("resnext101_32x8d", {3, 4, 23, 3}, 32, 8);
    for (auto& [k, v] : t) v.name = k;
    return t;
  }();
  return table;
}

ResNeXtSpec preset(const std::string& name) {
  auto it = presets().find(name);
  if (it == presets().end()) {
    std::string known;
    for (auto& n : preset_names()) known += (known.empty() ? "" : ", ") + n;
    throw ConfigError("model.preset", "unknown preset \"" + name + "\" (known: " + known + ")");
  }
  return it->second;
}

std::vector<std::string> preset_names() {
  std::vector<std::string> out;
  for (auto& [k, v] : presets()) out.push_back(k);
  return out;
}

}  // namespace rx::model
