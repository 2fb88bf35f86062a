// The fused optimizers against LibTorch's per-parameter ones: FusedSGD (common/optim/fused_sgd.h)
// against torch::optim::SGD, FusedAdam / FusedAdamW (fused_adam.h) against torch::optim::Adam / AdamW.
// Same model, same batches, the reducer's flat gradient buckets (one rank over the thread backend) or
// plain gradients; checkpoints saved by one load into the other.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <sstream>

#include "common/comm/thread/thread_communicator.h"
#include "common/model/precision.h"
#include "common/model/resnext.h"
#include "common/optim/fused_adam.h"
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
// The branches sgd_options() leaves out: dampening (Nesterov forbids it) and plain momentum.
torch::optim::SGDOptions dampened_sgd_options() {
  return torch::optim::SGDOptions(0.05).momentum(0.9).dampening(0.1).weight_decay(5e-4);
}

struct Run {
  model::ResNeXt& model;
  torch::optim::Optimizer& opt;
  parallel::Reducer* reducer;  // null: plain gradients; else .grad aliases its buckets
};

// Trains the runs side by side from step `first`. Each step, every run does its own forward and
// backward (through its reducer's hooks and buckets), then takes the first run's gradients, so that
// the runs differ only by their optimizers' arithmetic: this small network on random data turns a
// 1e-8 difference in the weights into 1e-2 within four SGD steps.
void train(const std::vector<Run>& runs, int first, int steps) {
  for (int s = first; s < first + steps; ++s) {
    auto [x, y] = batch(s);
    for (const auto& r : runs) {
      r.opt.zero_grad();
      const auto dtype = r.model->parameters()[0].scalar_type();  // float64 runs: the tensor-operation path
      auto loss = torch::nn::functional::cross_entropy(r.model->forward(x.to(dtype)), y);
      if (r.reducer) r.reducer->prepare_for_backward(true);
      loss.backward();
      try {  // say which run and step failed
        if (r.reducer) r.reducer->finalize();
      } catch (const std::exception& e) {
        const bool fused = dynamic_cast<optim::FusedOptimizer*>(&r.opt) != nullptr;
        throw std::runtime_error((fused ? "fused" : "plain") + std::string(" step ") + std::to_string(s) +
                                 ": " + e.what());
      }
    }
    {
      torch::NoGradGuard no_grad;
      const auto ref = runs[0].model->parameters();
      for (size_t k = 1; k < runs.size(); ++k) {
        auto ps = runs[k].model->parameters();
        for (size_t i = 0; i < ps.size(); ++i)
          ps[i].mutable_grad().copy_(ref[i].grad());  // in place: the alias
      }
    }
    for (const auto& r : runs) r.opt.step();
  }
}

double max_diff(model::ResNeXt& a, model::ResNeXt& b) {
  double d = 0;
  auto pa = a->parameters(), pb = b->parameters();
  for (size_t i = 0; i < pa.size(); ++i) d = std::max(d, (pa[i] - pb[i]).abs().max().item<double>());
  return d;
}

// A fresh model holding `src`'s current parameters.
model::ResNeXt copy_of(model::ResNeXt& src, bool channels_last = false) {
  auto dst = make_model(channels_last);
  torch::NoGradGuard ng;
  auto from = src->parameters(), to = dst->parameters();
  for (size_t i = 0; i < from.size(); ++i) to[i].copy_(from[i]);
  return dst;
}

// Saves `from`'s state and loads it into `to` (a checkpoint's round trip); returns the saved bytes.
std::string transfer(const torch::optim::Optimizer& from, torch::optim::Optimizer& to) {
  std::ostringstream bytes;
  torch::serialize::OutputArchive out;
  from.save(out);
  out.save_to(bytes);
  std::istringstream in(bytes.str());
  torch::serialize::InputArchive back;
  back.load_from(in);
  to.load(back);
  return bytes.str();
}

parallel::ReducerOptions small_buckets() {
  parallel::ReducerOptions o;
  o.bucket_mb = 0.05;  // several buckets: several flat groups
  o.first_bucket_mb = 0.01;
  o.timeout = kTimeout;
  return o;
}
}  // namespace

// The optimizers under test, each against LibTorch's own: SGD (Nesterov, weight decay), SGD with
// dampening (Nesterov forbids it), Adam (L2 decay on the gradient), AdamW (decoupled decay) and AdamW
// with AMSGrad ([Fused step], [Fused Adam]).
enum class Kind { kSgd, kSgdDampened, kAdam, kAdamW, kAdamWAmsgrad };

struct Case {
  Kind kind;
  bool channels_last;
};

// LibTorch's per-parameter optimizer (fused = false) or the fused one for `kind`.
std::unique_ptr<torch::optim::Optimizer> make_optimizer(Kind kind, std::vector<torch::Tensor> params,
                                                        bool fused) {
  switch (kind) {
    case Kind::kSgd:
    case Kind::kSgdDampened: {
      const auto o = kind == Kind::kSgd ? sgd_options() : dampened_sgd_options();
      if (fused) return std::make_unique<optim::FusedSGD>(params, o);
      return std::make_unique<torch::optim::SGD>(params, o);
    }
    case Kind::kAdam: {
      const auto o = torch::optim::AdamOptions(2e-3).weight_decay(5e-4);
      if (fused) return std::make_unique<optim::FusedAdam>(params, o);
      return std::make_unique<torch::optim::Adam>(params, o);
    }
    case Kind::kAdamW:
    case Kind::kAdamWAmsgrad:
      break;
  }
  const auto o = torch::optim::AdamWOptions(2e-3).weight_decay(1e-2).amsgrad(kind == Kind::kAdamWAmsgrad);
  if (fused) return std::make_unique<optim::FusedAdamW>(params, o);
  return std::make_unique<torch::optim::AdamW>(params, o);
}

const optim::FusedOptimizer& fused_view(const torch::optim::Optimizer& opt) {
  return dynamic_cast<const optim::FusedOptimizer&>(opt);
}

// A comparison of two trained models proves something only if training moved the weights.
void expect_trained(model::ResNeXt& m, bool channels_last) {
  EXPECT_GT((m->parameters()[0] - make_model(channels_last)->parameters()[0]).abs().max().item<double>(),
            1e-4)
      << "training did not move the weights: the comparison proves nothing";
}

class FusedOptimizerTest : public ::testing::TestWithParam<Case> {};

TEST_P(FusedOptimizerTest, MatchesTorchOverReducerBuckets) {
  const auto [kind, cl] = GetParam();
  auto group = comm::make_thread_group(1);
  auto ref = make_model(cl), fused = make_model(cl);
  parallel::Reducer ref_red(*ref, *group[0], small_buckets()), fused_red(*fused, *group[0], small_buckets());
  auto ref_opt = make_optimizer(kind, ref->parameters(), false);
  auto fused_opt = make_optimizer(kind, fused->parameters(), true);
  train({{ref, *ref_opt, &ref_red}, {fused, *fused_opt, &fused_red}}, 0, 4);
  EXPECT_GT(fused_view(*fused_opt).fused_groups(), 2) << "the reducer's buckets were not used as flat groups";
  EXPECT_EQ(fused_view(*fused_opt).loose_parameters(), 0);
  EXPECT_LT(max_diff(ref, fused), 1e-6);
  // [Aligned slices]: the flat buffers start every parameter and gradient on a 256-byte boundary of
  // their buffer (the CPU allocator aligns buffers to 64 bytes); cuDNN's channels-last kernels
  // fault on misaligned weights.
  for (const auto& item : fused->named_parameters()) {
    EXPECT_EQ(reinterpret_cast<uintptr_t>(item.value().data_ptr()) % 64, 0u) << item.key() << " (parameter)";
    EXPECT_EQ(reinterpret_cast<uintptr_t>(item.value().grad().data_ptr()) % 64, 0u)
        << item.key() << " (gradient)";
  }
  expect_trained(ref, cl);
}

// Without the reducer's buckets every parameter is loose: the per-parameter path.
TEST_P(FusedOptimizerTest, MatchesTorchWithoutReducer) {
  const auto [kind, cl] = GetParam();
  auto ref = make_model(cl), fused = make_model(cl);
  auto ref_opt = make_optimizer(kind, ref->parameters(), false);
  auto fused_opt = make_optimizer(kind, fused->parameters(), true);
  train({{ref, *ref_opt, nullptr}, {fused, *fused_opt, nullptr}}, 0, 3);
  EXPECT_EQ(fused_view(*fused_opt).fused_groups(), 0);
  EXPECT_LT(max_diff(ref, fused), 1e-6);
  expect_trained(ref, cl);
}

// A checkpoint of the fused optimizer loads into LibTorch's (and the other way), and training goes on
// identically: each parameter's state (momentum; step count and moments) is saved as its own.
TEST_P(FusedOptimizerTest, CheckpointsInterchangeableWithTorch) {
  const auto [kind, cl] = GetParam();
  auto group = comm::make_thread_group(1);
  auto ref = make_model(cl), fused = make_model(cl);
  parallel::Reducer ref_red(*ref, *group[0], small_buckets()), fused_red(*fused, *group[0], small_buckets());
  auto ref_opt = make_optimizer(kind, ref->parameters(), false);
  auto fused_opt = make_optimizer(kind, fused->parameters(), true);
  train({{ref, *ref_opt, &ref_red}, {fused, *fused_opt, &fused_red}}, 0, 3);

  // The fused state into LibTorch's optimizer on a copy of the fused model, and the reference's state
  // into a fused optimizer on a copy of the reference: both continue like the reference.
  auto resumed = copy_of(fused, cl);
  auto plain = make_optimizer(kind, resumed->parameters(), false);
  transfer(*fused_opt, *plain);
  auto refcopy = copy_of(ref, cl);
  parallel::Reducer refcopy_red(*refcopy, *group[0], small_buckets());
  auto fused_from_plain = make_optimizer(kind, refcopy->parameters(), true);
  transfer(*ref_opt, *fused_from_plain);

  train({{ref, *ref_opt, &ref_red}, {resumed, *plain, nullptr}, {refcopy, *fused_from_plain, &refcopy_red}},
        3, 2);
  EXPECT_LT(max_diff(ref, resumed), 1e-6);
  EXPECT_LT(max_diff(ref, refcopy), 1e-6);
  EXPECT_GT(fused_view(*fused_from_plain).fused_groups(), 2);
}

std::string case_name(const Case& c) {
  static const char* const kNames[] = {"Sgd", "SgdDampened", "Adam", "AdamW", "AdamWAmsgrad"};
  return std::string(kNames[static_cast<int>(c.kind)]) + (c.channels_last ? "ChannelsLast" : "Contiguous");
}
void PrintTo(const Case& c, std::ostream* os) { *os << case_name(c); }

INSTANTIATE_TEST_SUITE_P(Kinds, FusedOptimizerTest,
                         ::testing::Values(Case{Kind::kSgd, false}, Case{Kind::kSgd, true},
                                           Case{Kind::kSgdDampened, false}, Case{Kind::kAdam, false},
                                           Case{Kind::kAdam, true}, Case{Kind::kAdamW, false},
                                           Case{Kind::kAdamW, true}, Case{Kind::kAdamWAmsgrad, false}),
                         [](const auto& info) { return case_name(info.param); });

// Off the CPU's float32 path ([One pass] covers only that), the fused optimizers update a group with
// tensor operations: the GPU's path. float64 on the CPU takes it too, so it is checked here, against
// LibTorch's optimizers in float64, where both do the same operations in the same order.
TEST(FusedTensorPath, MatchesTorchInFloat64) {
  auto group = comm::make_thread_group(1);
  for (const auto kind : {Kind::kSgd, Kind::kSgdDampened, Kind::kAdam, Kind::kAdamWAmsgrad}) {
    SCOPED_TRACE(case_name({kind, false}));
    auto ref = make_model(false), fused = make_model(false);
    ref->to(torch::kFloat64);
    fused->to(torch::kFloat64);
    parallel::Reducer ref_red(*ref, *group[0], small_buckets()),
        fused_red(*fused, *group[0], small_buckets());
    auto ref_opt = make_optimizer(kind, ref->parameters(), false);
    auto fused_opt = make_optimizer(kind, fused->parameters(), true);
    train({{ref, *ref_opt, &ref_red}, {fused, *fused_opt, &fused_red}}, 0, 3);
    EXPECT_GT(fused_view(*fused_opt).fused_groups(), 2);
    EXPECT_LT(max_diff(ref, fused), 1e-12);
    expect_trained(ref, false);  // float64 against the float32 start: promoted
  }
}

// Every branch of the one-pass loops ([One pass]) against LibTorch: the SGD and Adam options the step
// tells apart, over one bucket of the whole model (149 k floats: two threads split each group).
TEST(FusedOptions, EveryBranchMatchesTorch) {
  const int threads = at::get_num_threads();
  at::set_num_threads(2);
  auto group = comm::make_thread_group(1);
  parallel::ReducerOptions one_bucket = small_buckets();
  one_bucket.bucket_mb = one_bucket.first_bucket_mb = 25;
  using Make = std::function<std::unique_ptr<torch::optim::Optimizer>(std::vector<torch::Tensor>, bool)>;
  auto sgd = [](torch::optim::SGDOptions o) -> Make {
    return [o](std::vector<torch::Tensor> ps, bool fused) -> std::unique_ptr<torch::optim::Optimizer> {
      if (fused) return std::make_unique<optim::FusedSGD>(ps, o);
      return std::make_unique<torch::optim::SGD>(ps, o);
    };
  };
  auto adam = [](torch::optim::AdamOptions o) -> Make {
    return [o](std::vector<torch::Tensor> ps, bool fused) -> std::unique_ptr<torch::optim::Optimizer> {
      if (fused) return std::make_unique<optim::FusedAdam>(ps, o);
      return std::make_unique<torch::optim::Adam>(ps, o);
    };
  };
  const std::vector<std::pair<std::string, Make>> cases = {
      {"SGD without momentum", sgd(torch::optim::SGDOptions(0.05).weight_decay(5e-4))},
      {"SGD with dampening, no decay", sgd(torch::optim::SGDOptions(0.05).momentum(0.9).dampening(0.1))},
      {"SGD Nesterov, no decay", sgd(torch::optim::SGDOptions(0.05).momentum(0.9).nesterov(true))},
      {"Adam with AMSGrad", adam(torch::optim::AdamOptions(2e-3).weight_decay(5e-4).amsgrad(true))},
      {"Adam, no decay", adam(torch::optim::AdamOptions(2e-3))},
  };
  for (const auto& [name, make] : cases) {
    SCOPED_TRACE(name);
    auto ref = make_model(false), fused = make_model(false);
    parallel::Reducer ref_red(*ref, *group[0], one_bucket), fused_red(*fused, *group[0], one_bucket);
    auto ref_opt = make(ref->parameters(), false), fused_opt = make(fused->parameters(), true);
    train({{ref, *ref_opt, &ref_red}, {fused, *fused_opt, &fused_red}}, 0, 3);
    EXPECT_GE(fused_view(*fused_opt).fused_groups(), 1);
    EXPECT_LT(max_diff(ref, fused), 1e-6);
    expect_trained(ref, false);
  }
  at::set_num_threads(threads);
}

// A checkpoint loaded into a fused optimizer that has already stepped replaces the state its layout
// aliases: the layout is rebuilt around the loaded state, and training goes on like LibTorch's.
TEST(FusedCheckpoint, LoadIntoSteppedOptimizer) {
  auto group = comm::make_thread_group(1);
  auto ref = make_model(false), fused = make_model(false);
  parallel::Reducer ref_red(*ref, *group[0], small_buckets()), fused_red(*fused, *group[0], small_buckets());
  auto ref_opt = make_optimizer(Kind::kAdamW, ref->parameters(), false);
  auto fused_opt = make_optimizer(Kind::kAdamW, fused->parameters(), true);
  train({{ref, *ref_opt, &ref_red}}, 0, 3);
  train({{fused, *fused_opt, &fused_red}}, 5, 2);  // other batches: other moments and step count
  transfer(*ref_opt, *fused_opt);
  {
    torch::NoGradGuard ng;
    auto from = ref->parameters(), to = fused->parameters();
    for (size_t i = 0; i < from.size(); ++i) to[i].copy_(from[i]);
  }
  train({{ref, *ref_opt, &ref_red}, {fused, *fused_opt, &fused_red}}, 3, 2);
  EXPECT_GT(fused_view(*fused_opt).fused_groups(), 2);
  EXPECT_LT(max_diff(ref, fused), 1e-6);
}
