#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "common/model/describe.h"
#include "common/model/resnext.h"
#include "common/model/state_dict.h"
#include "common/util/error.h"
#include "tests/support/temp_dir.h"

using namespace rx::model;

static int64_t params_of(const std::string& name, int classes) {
  auto spec = preset(name);
  spec.num_classes = classes;
  ResNeXt m(spec);
  return count_parameters(*m);
}

TEST(ResNeXtParams, PaperCifarPresets) {
  EXPECT_EQ(params_of("resnext29_8x64d", 10), 34426698);
  EXPECT_EQ(params_of("resnext29_16x64d", 10), 68155210);
}

TEST(ResNeXtParams, TorchvisionImageNetPresets) {
  EXPECT_EQ(params_of("resnext50_32x4d", 1000), 25028904);
  EXPECT_EQ(params_of("resnext50_32x4d", 10), 23000394);
  EXPECT_EQ(params_of("resnext101_32x8d", 1000), 88791336);
  EXPECT_EQ(params_of("resnext101_32x8d", 10), 86762826);
}

TEST(ResNeXtParams, TorchvisionParameterNames) {
  ResNeXt m(preset("resnext50_32x4d"));
  auto p = m->named_parameters();
  for (const char* k : {"conv1.weight", "bn1.weight", "layer1.0.conv1.weight", "layer1.0.downsample.0.weight",
                        "layer1.0.downsample.1.bias", "layer4.2.bn3.weight", "fc.weight", "fc.bias"})
    EXPECT_TRUE(p.contains(k)) << k;
  EXPECT_TRUE(m->named_buffers().contains("layer2.0.bn2.running_var"));
}

struct ShapeCase {
  std::string preset;
  int64_t h, w, c;
  std::vector<std::vector<int64_t>> features;  // C, H, W per stage
};

class ResNeXtShapes : public ::testing::TestWithParam<ShapeCase> {};

TEST_P(ResNeXtShapes, ForwardAndFeatures) {
  const auto& p = GetParam();
  auto spec = preset(p.preset);
  spec.in_channels = static_cast<int>(p.c);
  spec.num_classes = 7;
  ResNeXt m(spec);
  m->eval();
  torch::NoGradGuard ng;
  auto x = torch::randn({2, p.c, p.h, p.w});
  EXPECT_EQ(m->forward(x).sizes(), (std::vector<int64_t>{2, 7}));
  auto f = m->features(x);
  ASSERT_EQ(f.size(), p.features.size());
  for (size_t i = 0; i < f.size(); ++i) {
    std::vector<int64_t> want{2};
    want.insert(want.end(), p.features[i].begin(), p.features[i].end());
    EXPECT_EQ(f[i].sizes(), want) << "stage " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Inputs, ResNeXtShapes,
    ::testing::Values(
        ShapeCase{"resnext11_4x16d", 32, 32, 3, {{256, 32, 32}, {512, 16, 16}, {1024, 8, 8}}},
        ShapeCase{"resnext20_tiny", 28, 28, 1, {{64, 28, 28}, {128, 14, 14}, {256, 7, 7}}},
        ShapeCase{
            "resnext50_32x4d", 224, 224, 3, {{256, 56, 56}, {512, 28, 28}, {1024, 14, 14}, {2048, 7, 7}}},
        // A CIFAR preset at another, non-square size: its stages follow the input (28.6 s at 224x224
        // on a CI core; 64x48 tests the same).
        ShapeCase{"resnext11_4x16d", 64, 48, 3, {{256, 64, 48}, {512, 32, 24}, {1024, 16, 12}}}),
    [](const auto& info) {
      return info.param.preset + "_" + std::to_string(info.param.h) + "x" + std::to_string(info.param.w) +
             "x" + std::to_string(info.param.c);
    });

template <typename F>
static std::string config_field_of(F&& f) {
  try {
    f();
  } catch (const rx::ConfigError& e) {
    return e.field();
  }
  return "<no error>";
}

TEST(ResNeXtBadInput, ErrorsNameTheField) {
  EXPECT_EQ(config_field_of([] { preset("resnext29_3x3d"); }), "model.preset");
  EXPECT_EQ(config_field_of([] { cifar_spec(30, 8, 64); }), "model.depth");
  EXPECT_EQ(config_field_of([] { cifar_spec(29, 0, 64); }), "model.cardinality");
  EXPECT_EQ(config_field_of([] { cifar_spec(29, 8, -4); }), "model.base_width");
  EXPECT_EQ(config_field_of([] {
              auto s = cifar_spec(29, 8, 64);
              s.bottleneck_width = 100;  // 100 is not a multiple of 8
              ResNeXt m(s);
            }),
            "model.cardinality");
  EXPECT_EQ(config_field_of([] {
              auto s = preset("resnext20_tiny");
              s.num_classes = 0;
              ResNeXt m(s);
            }),
            "model.num_classes");
  EXPECT_EQ(config_field_of([] {
              auto s = preset("resnext20_tiny");
              s.in_channels = -1;
              ResNeXt m(s);
            }),
            "model.in_channels");
  EXPECT_EQ(config_field_of([] { describe(preset("resnext50_32x4d"), 16, 16); }), "input");
  EXPECT_EQ(config_field_of([] { describe(preset("resnext20_tiny"), 0, 28); }), "input");
}

TEST(ResNeXtStateDict, RoundTripAndMisShapedTensorIsNamed) {
  rx::testing::TempDir dir;
  const auto path = dir.file("tiny.pt");
  ResNeXt a(preset("resnext20_tiny")), b(preset("resnext20_tiny"));
  save_state_dict(*a, path);
  auto sd = read_state_dict(path);
  load_state_dict(*b, sd, {}, path);
  a->eval();
  b->eval();
  auto x = torch::randn({2, 3, 32, 32});
  EXPECT_TRUE(torch::equal(a->forward(x), b->forward(x)));

  for (auto& [k, v] : sd)
    if (k == "layer2.0.conv2.weight") v = torch::zeros({3, 3});
  try {
    load_state_dict(*b, sd, {}, path);
    FAIL() << "mis-shaped tensor accepted";
  } catch (const rx::DataError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("layer2.0.conv2.weight"), std::string::npos) << msg;
    EXPECT_NE(msg.find("mis-shaped"), std::string::npos) << msg;
    EXPECT_EQ(e.path(), path) << msg;
  }
  EXPECT_THROW(read_state_dict(dir.file("missing.pt")), rx::IoError);
}

TEST(ResNeXtDescribe, PaperModelTotalsAndStages) {
  auto r = describe(preset("resnext29_8x64d"), 32, 32);
  EXPECT_EQ(r.total_params, 34426698);
  ASSERT_EQ(r.stages.size(), 5u);  // stem, 3 stages, head
  const auto& s1 = r.stages[1];
  EXPECT_EQ(s1.blocks, 3);
  EXPECT_EQ(s1.groups, 8);
  EXPECT_EQ(s1.channels_per_group, 64);
  EXPECT_EQ(s1.bottleneck_width, 512);
  EXPECT_EQ(s1.out_channels, 256);
  EXPECT_EQ(r.stages[3].output_hwc, (std::vector<int64_t>{8, 8, 1024}));
  EXPECT_EQ(r.stages[3].total_stride, 4);
  // Stem MACs by hand: 32*32 positions x 64 filters x 3*3*3 weights.
  EXPECT_EQ(r.stages[0].macs, 32 * 32 * 64 * 27);
  // Closed form (sum over every conv of output positions x weights, plus the head): 5,387,266,048,
  // the paper's ~5.4 GFLOPs (multiply-adds) for 29-layer 8x64d.
  EXPECT_EQ(r.total_macs, 5387266048LL);
  auto j = to_json(r);
  EXPECT_EQ(j["totals"]["params"].get<int64_t>(), 34426698);
  EXPECT_EQ(j["stages"].size(), 5u);
}

TEST(ResNeXtInit, ZeroInitResidualAndBnDefaults) {
  auto spec = preset("resnext11_4x16d");
  spec.zero_init_residual = true;
  ResNeXt m(spec);
  auto p = m->named_parameters();
  EXPECT_EQ(p["layer1.0.bn3.weight"].abs().sum().item<double>(), 0.0);
  EXPECT_EQ(p["layer1.0.bn2.weight"].mean().item<double>(), 1.0);
  EXPECT_EQ(p["bn1.bias"].abs().sum().item<double>(), 0.0);
  // Kaiming normal, fan_out, ReLU: std = sqrt(2 / (out * k * k)).
  auto w = p["layer3.0.conv1.weight"];
  const double expected_std = std::sqrt(2.0 / (w.size(0) * w.size(2) * w.size(3)));
  EXPECT_NEAR(w.std().item<double>(), expected_std, 0.1 * expected_std);
}
