// Loads a torchvision resnext50_32x4d state_dict saved from Python and reproduces its eval output.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>

#include "common/model/resnext.h"
#include "common/model/state_dict.h"
#include "common/util/error.h"

using namespace rx::model;

static std::string ref_dir() {
  const char* d = std::getenv("RX_TV_DIR");
  return d ? d : "torchvision_reference";
}

TEST(TorchvisionEquivalence, Resnext50EvalOutputMatches) {
  ResNeXt model(preset("resnext50_32x4d"));
  auto sd = read_state_dict(ref_dir() + "/resnext50_32x4d_state_dict.pt");
  EXPECT_EQ(sd.size(), model->named_parameters().size() + model->named_buffers().size());
  load_state_dict(*model, sd, {}, "resnext50_32x4d_state_dict.pt");
  model->eval();

  auto io = read_state_dict(ref_dir() + "/resnext50_32x4d_io.pt");
  torch::Tensor x, expected;
  for (auto& [k, v] : io) (k == "input" ? x : expected) = v;
  ASSERT_TRUE(x.defined() && expected.defined());
  torch::NoGradGuard no_grad;
  auto y = model->forward(x);
  ASSERT_EQ(y.sizes(), expected.sizes());
  const double max_err = (y - expected).abs().max().item<double>();
  EXPECT_LT(max_err, 1e-4) << "max abs difference to torchvision";
  // Guard against a vacuous pass: the outputs are not all (near) zero.
  EXPECT_GT(expected.abs().max().item<double>(), 1e-2);
}

TEST(TorchvisionEquivalence, FineTuneHeadReplacement) {
  // The seed recipe: pretrained resnext50 features, a fresh 10-class head.
  auto spec = preset("resnext50_32x4d");
  spec.num_classes = 10;
  ResNeXt model(spec);
  auto sd = read_state_dict(ref_dir() + "/resnext50_32x4d_state_dict.pt");
  try {
    load_state_dict(*model, sd, {}, "sd.pt");
    FAIL() << "a 1000-class head loaded into a 10-class model";
  } catch (const rx::DataError& e) {
    EXPECT_NE(std::string(e.what()).find("fc.weight"), std::string::npos) << e.what();
  }
  // The model's own freshly initialised 10-class head, before the load that skips the file's head.
  auto fresh_head = model->named_parameters()["fc.weight"].detach().clone();
  LoadOptions skip;
  skip.skip_head = true;
  load_state_dict(*model, sd, skip, "sd.pt");

  auto params = model->named_parameters();
  auto buffers = model->named_buffers();
  int64_t features = 0;
  for (auto& [k, v] : sd) {
    if (k.rfind("fc.", 0) == 0) continue;
    const torch::Tensor* mine = params.find(k) ? params.find(k) : buffers.find(k);
    ASSERT_NE(mine, nullptr) << k << " is in the state_dict but not in the model";
    EXPECT_TRUE(torch::equal(*mine, v)) << k << " was not loaded";
    ++features;
  }
  EXPECT_EQ(features + 2, static_cast<int64_t>(sd.size()))
      << "everything but fc.weight and fc.bias is a feature";
  // The head is the model's own 10-class one, untouched by the 1000-class tensors in the file.
  const torch::Tensor head = params["fc.weight"];
  ASSERT_EQ(head.sizes(), (std::vector<int64_t>{10, 2048}));
  ASSERT_EQ(params["fc.bias"].sizes(), (std::vector<int64_t>{10}));
  EXPECT_TRUE(torch::equal(head, fresh_head)) << "loading with skip_head changed the new head";
  const torch::Tensor* pretrained_head = nullptr;
  for (auto& [k, v] : sd)
    if (k == "fc.weight") pretrained_head = &v;
  ASSERT_NE(pretrained_head, nullptr) << "the reference state_dict has no fc.weight";
  ASSERT_EQ(pretrained_head->sizes(), (std::vector<int64_t>{1000, 2048}));
  EXPECT_FALSE(torch::equal(head, pretrained_head->narrow(0, 0, 10))) << "the head holds the pretrained rows";
  EXPECT_GT(head.abs().max().item<double>(), 0.0) << "the new head is initialised, not zero";
  EXPECT_TRUE(head.requires_grad()) << "the new head must be trainable";
  // The forward pass ends in the 10-class head.
  model->eval();
  torch::NoGradGuard no_grad;
  const auto y = model->forward(torch::randn({1, 3, 64, 64}));
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{1, 10}));
}
