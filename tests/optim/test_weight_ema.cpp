// WeightEma (common/optim/weight_ema.h) against a double-precision oracle of the [Weight EMA] formula,
// plus the swap used for evaluation and the checkpoint round trip.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <sstream>

#include "common/model/precision.h"
#include "common/model/resnext.h"
#include "common/optim/weight_ema.h"
#include "common/util/error.h"

using namespace rx;

namespace {

struct NetImpl : torch::nn::Module {
  NetImpl() {
    fc = register_module("fc", torch::nn::Linear(4, 3));
    bn = register_module("bn", torch::nn::BatchNorm1d(3));
  }
  torch::Tensor forward(torch::Tensor x) { return bn(fc(x)); }
  torch::nn::Linear fc{nullptr};
  torch::nn::BatchNorm1d bn{nullptr};
};
TORCH_MODULE(Net);

// Moves every parameter by a step-dependent amount and runs a training forward (which updates the
// BatchNorm running statistics and num_batches_tracked), as an optimizer step plus a batch would.
void fake_step(Net& net, int step) {
  torch::NoGradGuard no_grad;
  for (auto& p : net->parameters()) p.add_(torch::full_like(p, 0.1 * step) + 0.01 * p);
  net->train();
  net->forward(torch::arange(8 * 4, torch::kFloat).view({8, 4}) * (0.05 * step));
}

}  // namespace

TEST(WeightEma, MatchesTheFormulaWithWarmUp) {
  torch::manual_seed(3);
  Net net;
  const double decay = 0.9;
  optim::WeightEma ema(*net, decay);
  // The oracle in double precision, from the same starting values.
  std::vector<torch::Tensor> expect;
  for (auto& t : optim::ema_tensors(*net)) expect.push_back(t.detach().to(torch::kFloat64).clone());
  for (int step = 1; step <= 90; ++step) {
    fake_step(net, step);
    const double d = std::min(decay, (1.0 + step) / (10.0 + step));
    EXPECT_DOUBLE_EQ(ema.next_decay(), d);
    ema.update();
    const auto live = optim::ema_tensors(*net);
    for (size_t i = 0; i < live.size(); ++i) {
      if (live[i].is_floating_point())
        expect[i] = expect[i] * d + live[i].to(torch::kFloat64) * (1 - d);
      else
        expect[i] = live[i].to(torch::kFloat64);
    }
  }
  EXPECT_EQ(ema.updates(), 90);
  EXPECT_DOUBLE_EQ(ema.next_decay(), decay) << "warm-up over after ~10 / (1 - decay) updates";
  const auto& avg = ema.averages();
  ASSERT_EQ(avg.size(), expect.size());
  bool differs_from_live = false;
  const auto live = optim::ema_tensors(*net);
  for (size_t i = 0; i < avg.size(); ++i) {
    EXPECT_TRUE(torch::allclose(avg[i].to(torch::kFloat64), expect[i], 1e-5, 1e-6)) << "tensor " << i;
    if (avg[i].is_floating_point())
      differs_from_live |= !torch::equal(avg[i], live[i]);
    else
      EXPECT_TRUE(torch::equal(avg[i], live[i])) << "integer buffers are copied";
  }
  EXPECT_TRUE(differs_from_live);
}

TEST(WeightEma, AppliedSwapsInAndRestores) {
  torch::manual_seed(4);
  Net net;
  optim::WeightEma ema(*net, 0.5);
  fake_step(net, 1);
  ema.update();
  fake_step(net, 2);
  std::vector<torch::Tensor> own, avg_before;
  for (auto& t : optim::ema_tensors(*net)) own.push_back(t.detach().clone());
  for (auto& t : ema.averages()) avg_before.push_back(t.clone());
  {
    optim::WeightEma::Applied applied(ema);
    const auto live = optim::ema_tensors(*net);
    for (size_t i = 0; i < live.size(); ++i) EXPECT_TRUE(torch::equal(live[i], avg_before[i])) << i;
    torch::NoGradGuard no_grad;
    net->bn->running_mean.fill_(42);  // e.g. a broadcast of BatchNorm statistics during evaluation
  }
  const auto live = optim::ema_tensors(*net);
  for (size_t i = 0; i < live.size(); ++i) EXPECT_TRUE(torch::equal(live[i], own[i])) << "restored " << i;
  bool kept = false;
  for (auto& t : ema.averages()) kept |= t.numel() == 3 && torch::equal(t, torch::full({3}, 42.0f));
  EXPECT_TRUE(kept) << "a change made while applied is kept in the average";
}

TEST(WeightEma, CheckpointRoundTripAndMismatch) {
  torch::manual_seed(5);
  Net net;
  optim::WeightEma ema(*net, 0.99);
  for (int s = 1; s <= 3; ++s) {
    fake_step(net, s);
    ema.update();
  }
  torch::serialize::OutputArchive out;
  ema.save(out);
  std::ostringstream bytes;
  out.save_to(bytes);
  const std::string data = bytes.str();

  optim::WeightEma fresh(*net, 0.99);
  torch::serialize::InputArchive in;
  in.load_from(data.data(), data.size());
  ASSERT_TRUE(fresh.load(in));
  EXPECT_EQ(fresh.updates(), 3);
  for (size_t i = 0; i < ema.averages().size(); ++i)
    EXPECT_TRUE(torch::equal(fresh.averages()[i], ema.averages()[i])) << i;

  torch::serialize::OutputArchive empty;
  empty.write("other", torch::zeros({1}));
  std::ostringstream empty_bytes;
  empty.save_to(empty_bytes);
  torch::serialize::InputArchive no_ema;
  const std::string e = empty_bytes.str();
  no_ema.load_from(e.data(), e.size());
  EXPECT_FALSE(fresh.load(no_ema)) << "a checkpoint written without the EMA has none to load";

  // Another model's average does not fit.
  torch::manual_seed(5);
  auto spec = model::preset("resnext20_tiny");
  spec.in_channels = 1;
  model::ResNeXt other(spec);
  optim::WeightEma other_ema(*other, 0.99);
  torch::serialize::InputArchive in2;
  in2.load_from(data.data(), data.size());
  EXPECT_THROW(other_ema.load(in2), Error);
}

TEST(WeightEma, ChannelsLastWeights) {
  torch::manual_seed(6);
  auto spec = model::preset("resnext20_tiny");
  spec.in_channels = 1;
  model::ResNeXt m(spec);
  model::to_channels_last(*m);
  optim::WeightEma ema(*m, 0.9);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : m->parameters()) p.mul_(2);
  }
  ema.update();  // d_1 = 2/11
  const double d = 2.0 / 11.0;
  const auto live = optim::ema_tensors(*m);
  for (size_t i = 0; i < live.size(); ++i) {
    if (!live[i].is_floating_point() || live[i].dim() != 4) continue;
    const auto want = live[i] / 2 * d + live[i] * (1 - d);
    EXPECT_TRUE(torch::allclose(ema.averages()[i], want, 1e-5, 1e-6)) << i;
  }
}
