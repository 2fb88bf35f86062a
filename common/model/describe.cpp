#include "common/model/describe.h"

#include <torch/torch.h>

#include <cstdio>
#include <sstream>

#include "common/model/resnext.h"
#include "common/util/error.h"

namespace rx::model {

// [Detection verdict] FPN-style detectors (Lin et al. 2017) take levels P2..P5 at strides 4..32;
// finer maps are too costly to run heads on and coarser ones lose small objects.
static std::string verdict(int total_stride, int64_t channels) {
  std::ostringstream os;
  int level = 0;
  for (int s = total_stride; s > 1; s /= 2) ++level;
  if (total_stride < 4) {
    os << "stride " << total_stride << ": finer than any FPN level (P2 = stride 4); fine for dense "
       << "prediction, too costly as a detection level";
  } else if (total_stride <= 32) {
    os << "stride " << total_stride << ", " << channels << " ch: usable as FPN level P" << level;
    if (channels > 256) os << " (lateral 1x1 to 256 ch)";
  } else {
    os << "stride " << total_stride << ": coarser than P5, only for large objects";
  }
  return os.str();
}

static int64_t params_of(const torch::nn::Module& m) { return count_parameters(m); }

ArchitectureReport describe(const ResNeXtSpec& spec, int64_t height, int64_t width) {
  if (height <= 0 || width <= 0)
    throw ConfigError("input", "height and width must be positive, got " + std::to_string(height) + "x" +
                                   std::to_string(width));
  const int64_t min_side = static_cast<int64_t>(spec.stem_stride()) << (spec.blocks.size() - 1);
  if (height < min_side || width < min_side)
    throw ConfigError("input", spec.name + " needs at least " + std::to_string(min_side) + "x" +
                                   std::to_string(min_side) + " input, got " + std::to_string(height) + "x" +
                                   std::to_string(width));
  torch::NoGradGuard no_grad;
  ResNeXt model(spec);
  model->eval();

  ArchitectureReport r;
  r.model = spec.name;
  r.input_hwc = {height, width, spec.in_channels};
  r.num_classes = spec.num_classes;

  auto x = torch::zeros({1, spec.in_channels, height, width});
  auto record = [&](StageReport s, const torch::Tensor& in, const torch::Tensor& out, int64_t macs) {
    s.in_channels = static_cast<int>(in.size(1));
    s.out_channels = static_cast<int>(out.dim() == 4 ? out.size(1) : out.size(1));
    if (out.dim() == 4) {
      s.output_hwc = {out.size(2), out.size(3), out.size(1)};
      s.stride = static_cast<int>(in.size(2) / out.size(2));
      s.total_stride = static_cast<int>(height / out.size(2));
      s.detection_verdict = verdict(s.total_stride, out.size(1));
    } else {
      s.output_hwc = {1, 1, out.size(1)};
    }
    s.macs = macs;
    r.total_params += s.params;
    r.total_macs += macs;
    r.stages.push_back(std::move(s));
  };

  torch::Tensor y;
  {
    MacCounter counter;
    y = model->stem_forward(x);
    StageReport s;
    s.name = "stem";
    s.params = params_of(*model->named_children()["conv1"]) + params_of(*model->named_children()["bn1"]);
    record(std::move(s), x, y, counter.macs());
  }
  for (size_t i = 0; i < model->num_stages(); ++i) {
    auto stage = model->stage(i);
    MacCounter counter;
    auto out = stage->forward(y);
    StageReport s;
    s.name = "layer" + std::to_string(i + 1);
    s.blocks = static_cast<int>(stage->size());
    auto conv2 = stage[0]->named_children()["conv2"]->as<torch::nn::Conv2d>();
    s.groups = static_cast<int>(conv2->options.groups());
    s.bottleneck_width = static_cast<int>(conv2->options.in_channels());
    s.channels_per_group = s.bottleneck_width / s.groups;
    s.params = params_of(*stage);
    record(std::move(s), y, out, counter.macs());
    y = out;
  }
  {
    MacCounter counter;
    auto logits = model->head_forward(y);
    StageReport s;
    s.name = "head";
    s.params = params_of(*model->named_children()["fc"]);
    record(std::move(s), y, logits, counter.macs());
  }
  RX_CHECK(r.total_params == count_parameters(*model), "per-stage parameters do not add up");
  return r;
}

static std::string human(double v) {
  char buf[32];
  if (v >= 1e9)
    std::snprintf(buf, sizeof buf, "%.2fG", v / 1e9);
  else if (v >= 1e6)
    std::snprintf(buf, sizeof buf, "%.2fM", v / 1e6);
  else if (v >= 1e3)
    std::snprintf(buf, sizeof buf, "%.1fk", v / 1e3);
  else
    std::snprintf(buf, sizeof buf, "%.0f", v);
  return buf;
}

std::string to_table(const ArchitectureReport& r) {
  std::ostringstream os;
  char line[256];
  os << r.model << "  input " << r.input_hwc[0] << "x" << r.input_hwc[1] << "x" << r.input_hwc[2] << ", "
     << r.num_classes << " classes\n";
  std::snprintf(line, sizeof line, "%-7s %6s %6s %6s %6s %6s %6s %6s %16s %12s %10s\n", "stage", "blocks",
                "groups", "ch/grp", "width", "in", "out", "stride", "output HxWxC", "params", "MACs");
  os << line;
  for (const auto& s : r.stages) {
    std::string hwc = std::to_string(s.output_hwc[0]) + "x" + std::to_string(s.output_hwc[1]) + "x" +
                      std::to_string(s.output_hwc[2]);
    auto dash = [](int v) { return v ? std::to_string(v) : std::string("-"); };
    std::snprintf(line, sizeof line, "%-7s %6s %6s %6s %6s %6d %6d %6s %16s %12lld %10s\n", s.name.c_str(),
                  dash(s.blocks).c_str(), dash(s.groups).c_str(), dash(s.channels_per_group).c_str(),
                  dash(s.bottleneck_width).c_str(), s.in_channels, s.out_channels, dash(s.stride).c_str(),
                  hwc.c_str(), static_cast<long long>(s.params), human(static_cast<double>(s.macs)).c_str());
    os << line;
  }
  os << "total: " << r.total_params << " parameters (" << human(static_cast<double>(r.total_params)) << "), "
     << r.total_macs << " MACs (" << human(static_cast<double>(r.total_macs)) << ") per image\n";
  os << "as a detection backbone:\n";
  for (const auto& s : r.stages)
    if (!s.detection_verdict.empty()) os << "  " << s.name << ": " << s.detection_verdict << "\n";
  return os.str();
}

nlohmann::json to_json(const ArchitectureReport& r) {
  nlohmann::json stages = nlohmann::json::array();
  for (const auto& s : r.stages) {
    stages.push_back({{"name", s.name},
                      {"blocks", s.blocks},
                      {"groups", s.groups},
                      {"channels_per_group", s.channels_per_group},
                      {"bottleneck_width", s.bottleneck_width},
                      {"in_channels", s.in_channels},
                      {"out_channels", s.out_channels},
                      {"stride", s.stride},
                      {"total_stride", s.total_stride},
                      {"output_hwc", s.output_hwc},
                      {"params", s.params},
                      {"macs", s.macs},
                      {"detection", s.detection_verdict}});
  }
  return {{"model", r.model},
          {"input_hwc", r.input_hwc},
          {"num_classes", r.num_classes},
          {"stages", stages},
          {"totals", {{"params", r.total_params}, {"macs", r.total_macs}}}};
}

}  // namespace rx::model
