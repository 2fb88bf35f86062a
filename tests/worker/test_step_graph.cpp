// [Fixed addresses] and [Graphed step] on CPUs: the graphs themselves need a GPU
// (tests/gpu/test_gpu_training.cpp), but what makes replaying them sound does not. Between a capture
// and a replay, the trainer's eager parts (Reducer::zero_grads, prepare_for_backward, finalize, a
// fused optimizer step over the flat layout) must keep every parameter, gradient and buffer where it
// was once the warm-up has settled the layout, and every way a tensor can move must be caught by name.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <memory>
#include <string>

#include "common/comm/thread/thread_communicator.h"
#include "common/model/resnext.h"
#include "common/optim/fused_adam.h"
#include "common/optim/fused_sgd.h"
#include "common/parallel/reducer.h"
#include "common/util/error.h"
#include "worker/step_graph.h"

using namespace rx;

namespace {

model::ResNeXt make_model() {
  torch::manual_seed(3);
  auto spec = model::preset("resnext20_tiny");
  spec.in_channels = 1;
  return model::ResNeXt(spec);
}

worker::FixedAddresses fixed_of(model::ResNeXt& m) {
  worker::FixedAddresses out;
  for (const auto& p : m->named_parameters()) out.add_parameter(p.key(), p.value());
  for (const auto& b : m->named_buffers()) out.add_buffer(b.key(), b.value());
  return out;
}

// The Error check() throws, or "" when nothing moved.
std::string moved(const worker::FixedAddresses& fixed) {
  try {
    fixed.check();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::unique_ptr<torch::optim::Optimizer> make_fused(bool adamw, const std::vector<torch::Tensor>& params) {
  if (adamw) return std::make_unique<optim::FusedAdamW>(params, torch::optim::AdamWOptions(1e-3));
  return std::make_unique<optim::FusedSGD>(params, torch::optim::SGDOptions(0.05).momentum(0.9));
}

class SettledStep : public ::testing::TestWithParam<bool> {};  // FusedSGD, FusedAdamW

// The trainer's eager step, as Trainer::train_epoch runs it around the graphs, over the reducer's
// buckets and a fused optimizer: after the first step nothing moves, while the values do change.
// The first step does move the parameters (the flat layout): the capture waits for it.
TEST_P(SettledStep, KeepsEveryAddressAfterTheFirstStep) {
  auto group = comm::make_thread_group(1);
  auto m = make_model();
  m->train();
  parallel::ReducerOptions ro;
  ro.bucket_mb = 0.05;  // several buckets, several flat groups
  ro.timeout = comm::Millis(60000);
  parallel::Reducer reducer(*m, *group[0], ro);
  auto opt = make_fused(GetParam(), m->parameters());
  auto step = [&](int s) {
    auto gen = at::detail::createCPUGenerator(40 + s);
    auto x = torch::randn({4, 1, 28, 28}, gen);
    auto y = torch::randint(0, 10, {4}, gen, torch::kInt64);
    reducer.zero_grads();
    reducer.prepare_for_backward(true);
    torch::nn::functional::cross_entropy(m->forward(x), y).backward();
    reducer.finalize();
    opt->step();
  };
  reducer.zero_grads();  // every .grad defined, as after the warm-up
  const auto before_layout = fixed_of(m);
  step(0);
  EXPECT_NE(moved(before_layout), "") << "the first step was expected to move parameters into flat buffers";
  const auto settled = fixed_of(m);
  const auto weights = m->parameters()[0].detach().clone();
  for (int s = 1; s <= 3; ++s) {
    step(s);
    EXPECT_EQ(moved(settled), "") << "after step " << s;
  }
  EXPECT_GT((m->parameters()[0] - weights).abs().max().item<double>(), 0) << "the steps changed nothing";
}

INSTANTIATE_TEST_SUITE_P(FixedAddresses, SettledStep, ::testing::Values(false, true), [](const auto& info) {
  return std::string(info.param ? "FusedAdamW" : "FusedSGD");
});

// Each kind of move, caught and named; changes of value in place are not moves.
TEST(FixedAddresses, NamesWhatMoved) {
  auto m = make_model();
  for (auto& p : m->parameters()) p.mutable_grad() = torch::zeros_like(p);
  const auto named = m->named_parameters();
  const std::string name = named[2].key();
  auto p = named[2].value();
  {
    const auto fixed = fixed_of(m);
    EXPECT_GT(fixed.size(), 2 * named.size()) << "parameters, their gradients and the buffers";
    torch::NoGradGuard no_grad;
    p.add_(1.0);
    p.mutable_grad().fill_(2.0);
    for (auto& b : m->buffers()) b.add_(1);
    EXPECT_EQ(moved(fixed), "");
  }
  {
    const auto fixed = fixed_of(m);
    p.set_data(p.detach().clone());  // what the flat layout does to a parameter
    EXPECT_NE(moved(fixed).find(name + " moved after the step was captured"), std::string::npos)
        << moved(fixed);
  }
  {
    const auto fixed = fixed_of(m);
    p.mutable_grad() = torch::zeros_like(p);  // a new gradient tensor, as zero_grad(set_to_none) makes
    EXPECT_NE(moved(fixed).find(name + ".grad moved"), std::string::npos) << moved(fixed);
  }
  {
    const auto fixed = fixed_of(m);
    p.mutable_grad() = torch::Tensor();  // no gradient at all
    EXPECT_NE(moved(fixed).find(name + ".grad moved"), std::string::npos) << moved(fixed);
  }
  {
    const auto fixed = fixed_of(m);
    const auto buffer = m->named_buffers()[0];
    torch::NoGradGuard no_grad;
    buffer.value().set_(buffer.value().clone());  // what a checkpoint load does with set_()
    EXPECT_NE(moved(fixed).find(buffer.key() + " moved"), std::string::npos) << moved(fixed);
  }
}

// On a CPU device (or in a CPU-only build) the StepGraph refuses to exist, naming the setting.
TEST(StepGraph, RefusedOnCpu) {
  try {
    worker::StepGraph graph(torch::Device(torch::kCPU));
    ADD_FAILURE() << "a StepGraph was built for a CPU";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.field(), "training.cuda_graph");
    EXPECT_NE(e.message().find("set it to false"), std::string::npos) << e.what();
  }
}

}  // namespace
