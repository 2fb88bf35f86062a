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
  LoadOptions skip;
  skip.skip_head = true;
  load_state_dict(*model, sd, skip, "sd.pt");
  for (auto& [k, v] : sd)
    if (k == "layer4.2.conv3.weight") {
      EXPECT_TRUE(torch::equal(model->named_parameters()[k], v));
    }
}
