// FusedSGD (common/optim/fused_sgd.h) against torch::optim::SGD: same model, same batches, the
// reducer's flat gradient buckets (one rank over the thread backend) or plain gradients.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdint>
#include <sstream>

#include "common/comm/thread/thread_communicator.h"
#include "common/model/precision.h"
#include "common/model/resnext.h"
#include "common/optim/fused_sgd.h"
#include "common/parallel/reducer.h"

using namespace rx;

namespace {
const comm::Millis kTimeout{60000};

model::ResNeXt make_model(bool channels_last) {
  torch::manual_seed(5);
  auto spec = model::preset("resnext20_tiny");
  spec.in_channels = 1;
  model::ResNeXt m(spec);
  if (channels_last) model::to_channels_last(*m);
  return m;
}

std::pair<torch::Tensor, torch::Tensor> batch(int step) {
  auto gen = at::detail::createCPUGenerator(77 + step);
  return {torch::randn({6, 1, 28, 28}, gen), torch::randint(0, 10, {6}, gen, torch::kInt64)};
}

torch::optim::SGDOptions sgd_options() {
  return torch::optim::SGDOptions(0.05).momentum(0.9).nesterov(true).weight_decay(5e-4);
}

// Trains `m` for `steps` with `opt`; with a reducer when `reducer` is set (its grads alias buckets).
void train(model::ResNeXt& m, torch::optim::Optimizer& opt, parallel::Reducer* reducer, int first,
           int steps) {
  for (int s = first; s < first + steps; ++s) {
    opt.zero_grad();
    auto [x, y] = batch(s);
    auto loss = torch::nn::functional::cross_entropy(m->forward(x), y);
    if (reducer) reducer->prepare_for_backward(true);
    loss.backward();
    try {  // say which run and step failed: both models train in one test
      if (reducer) reducer->finalize();
    } catch (const std::exception& e) {
      const bool fused = dynamic_cast<optim::FusedSGD*>(&opt) != nullptr;
      throw std::runtime_error((fused ? "fused" : "plain") + std::string(" step ") + std::to_string(s) +
                               ": " + e.what());
    }
    opt.step();
  }
}

double max_diff(model::ResNeXt& a, model::ResNeXt& b) {
  double d = 0;
  auto pa = a->parameters(), pb = b->parameters();
  for (size_t i = 0; i < pa.size(); ++i) d = std::max(d, (pa[i] - pb[i]).abs().max().item<double>());
  return d;
}

parallel::ReducerOptions small_buckets() {
  parallel::ReducerOptions o;
  o.bucket_mb = 0.05;  // several buckets: several flat groups
  o.first_bucket_mb = 0.01;
  o.timeout = kTimeout;
  return o;
}
}  // namespace

class FusedSgd : public ::testing::TestWithParam<bool> {};  // channels-last weights or not

TEST_P(FusedSgd, MatchesTorchSgdOverReducerBuckets) {
  auto group = comm::make_thread_group(1);
  auto ref = make_model(GetParam()), fused = make_model(GetParam());
  parallel::Reducer ref_red(*ref, *group[0], small_buckets()), fused_red(*fused, *group[0], small_buckets());
  torch::optim::SGD ref_opt(ref->parameters(), sgd_options());
  optim::FusedSGD fused_opt(fused->parameters(), sgd_options());
  train(ref, ref_opt, &ref_red, 0, 4);
  train(fused, fused_opt, &fused_red, 0, 4);
  EXPECT_GT(fused_opt.fused_groups(), 2) << "the reducer's buckets were not used as flat groups";
  EXPECT_EQ(fused_opt.loose_parameters(), 0);
  EXPECT_LT(max_diff(ref, fused), 1e-6);
  // [Aligned slices]: the flat buffers start every parameter and gradient on a 256-byte boundary of
  // their buffer (the CPU allocator aligns buffers to 64 bytes); cuDNN's channels-last kernels
  // fault on misaligned weights.
  for (const auto& item : fused->named_parameters()) {
    EXPECT_EQ(reinterpret_cast<uintptr_t>(item.value().data_ptr()) % 64, 0u) << item.key() << " (parameter)";
    EXPECT_EQ(reinterpret_cast<uintptr_t>(item.value().grad().data_ptr()) % 64, 0u)
        << item.key() << " (gradient)";
  }
  EXPECT_GT((ref->parameters()[0] - make_model(GetParam())->parameters()[0]).abs().max().item<double>(), 1e-4)
      << "training did not move the weights: the comparison proves nothing";
}

TEST_P(FusedSgd, MatchesTorchSgdWithoutReducer) {
  auto ref = make_model(GetParam()), fused = make_model(GetParam());
  torch::optim::SGD ref_opt(ref->parameters(), sgd_options());
  optim::FusedSGD fused_opt(fused->parameters(), sgd_options());
  train(ref, ref_opt, nullptr, 0, 3);
  train(fused, fused_opt, nullptr, 0, 3);
  EXPECT_LT(max_diff(ref, fused), 1e-6);
}

INSTANTIATE_TEST_SUITE_P(Layouts, FusedSgd, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "ChannelsLast" : "Contiguous"; });

// A checkpoint of FusedSGD loads into torch::optim::SGD (and the other way) and training goes on
// identically; the saved momentum is each parameter's own, not the whole flat buffer per parameter.
TEST(FusedSgdCheckpoint, InterchangeableWithTorchSgd) {
  auto group = comm::make_thread_group(1);
  auto ref = make_model(false), fused = make_model(false);
  parallel::Reducer ref_red(*ref, *group[0], small_buckets()), fused_red(*fused, *group[0], small_buckets());
  torch::optim::SGD ref_opt(ref->parameters(), sgd_options());
  optim::FusedSGD fused_opt(fused->parameters(), sgd_options());
  train(ref, ref_opt, &ref_red, 0, 3);
  train(fused, fused_opt, &fused_red, 0, 3);

  std::ostringstream fused_bytes;
  {
    torch::serialize::OutputArchive a;
    fused_opt.save(a);
    a.save_to(fused_bytes);
  }
  int64_t momentum_bytes = 0;
  for (auto& p : fused->parameters()) momentum_bytes += p.numel() * 4;
  EXPECT_LT(static_cast<double>(fused_bytes.str().size()), 1.5 * momentum_bytes)
      << "flat buffers saved per parameter";

  // FusedSGD's state into a plain SGD on a copy of the fused model: continues like the reference.
  auto resumed = make_model(false);
  {
    torch::NoGradGuard ng;
    auto src = fused->parameters(), dst = resumed->parameters();
    for (size_t i = 0; i < src.size(); ++i) dst[i].copy_(src[i]);
  }
  torch::optim::SGD plain(resumed->parameters(), sgd_options());
  {
    std::istringstream in(fused_bytes.str());
    torch::serialize::InputArchive a;
    a.load_from(in);
    plain.load(a);
  }
  // And the reference's state into a FusedSGD on a copy of the reference model.
  auto refcopy = make_model(false);
  {
    torch::NoGradGuard ng;
    auto src = ref->parameters(), dst = refcopy->parameters();
    for (size_t i = 0; i < src.size(); ++i) dst[i].copy_(src[i]);
  }
  parallel::Reducer refcopy_red(*refcopy, *group[0], small_buckets());
  optim::FusedSGD fused_from_plain(refcopy->parameters(), sgd_options());
  {
    std::ostringstream bytes;
    torch::serialize::OutputArchive a;
    ref_opt.save(a);
    a.save_to(bytes);
    std::istringstream in(bytes.str());
    torch::serialize::InputArchive b;
    b.load_from(in);
    fused_from_plain.load(b);
  }
  train(ref, ref_opt, &ref_red, 3, 2);
  train(resumed, plain, nullptr, 3, 2);
  train(refcopy, fused_from_plain, &refcopy_red, 3, 2);
  EXPECT_LT(max_diff(ref, resumed), 1e-6);
  EXPECT_LT(max_diff(ref, refcopy), 1e-6);
  EXPECT_GT(fused_from_plain.fused_groups(), 2);
}
