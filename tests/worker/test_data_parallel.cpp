// Data-parallel equivalence, in process: N ranks (threads over the thread backend) each take one
// optimizer step on their B samples; the result must equal one step on N*B samples in one process.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "common/comm/thread/thread_communicator.h"
#include "common/model/resnext.h"
#include "common/parallel/replica_sync.h"
#include "common/util/error.h"
#include "tests/support/rank_threads.h"

using namespace rx;

namespace {
model::ResNeXt make_model(int seed) {
  torch::manual_seed(seed);
  auto spec = model::preset("resnext20_tiny");
  spec.in_channels = 1;
  model::ResNeXt m(spec);
  m->eval();  // BN uses running statistics: per-sample independence, as the equivalence needs
  return m;
}

void sgd_step(model::ResNeXt& m, const torch::Tensor& x, const torch::Tensor& y,
              parallel::FlatGradientAllreduce* sync) {
  torch::optim::SGD opt(m->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9).weight_decay(5e-4));
  opt.zero_grad();
  torch::nn::functional::cross_entropy(m->forward(x), y).backward();
  if (sync) sync->sync();
  opt.step();
}

torch::Tensor flat_params(const model::ResNeXt& m) {
  std::vector<torch::Tensor> ps;
  for (const auto& p : m->parameters()) ps.push_back(p.detach().reshape({-1}));
  return torch::cat(ps);
}
}  // namespace

class DataParallelEquivalence : public ::testing::TestWithParam<int> {};

TEST_P(DataParallelEquivalence, OneStepOnNRanksEqualsOneBigStep) {
  torch::set_num_threads(1);
  const int n = GetParam();
  const int64_t b = 4;
  torch::manual_seed(99);
  auto x = torch::randn({n * b, 1, 28, 28});
  auto y = torch::randint(0, 10, {n * b}, torch::kInt64);

  auto reference = make_model(7);
  sgd_step(reference, x, y, nullptr);
  const auto want = flat_params(reference);

  std::vector<model::ResNeXt> replicas;
  for (int r = 0; r < n; ++r) replicas.push_back(make_model(7));
  auto group = comm::make_thread_group(n);
  const auto errors = rx::testing::run_ranks(n, [&](int r) {
    parallel::FlatGradientAllreduce sync(*replicas[r], *group[r], comm::Millis(20000));
    sgd_step(replicas[r], x.narrow(0, r * b, b), y.narrow(0, r * b, b), &sync);
  });
  ASSERT_TRUE(rx::testing::all_ranks_ok(errors));
  for (int r = 0; r < n; ++r) {
    const double diff = (flat_params(replicas[r]) - want).abs().max().item<double>();
    EXPECT_LT(diff, 1e-5) << "rank " << r << " of " << n;
    EXPECT_EQ(parallel::parameter_checksum(*replicas[r]), parallel::parameter_checksum(*replicas[0]))
        << "replicas must be bit-identical";
  }
  // Guard against a vacuous pass: the step changed the parameters.
  EXPECT_GT((want - flat_params(make_model(7))).abs().max().item<double>(), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Worlds, DataParallelEquivalence, ::testing::Values(1, 2, 3, 4));

TEST(ReplicaSync, BroadcastMakesReplicasEqualAndVerifyNamesDivergentRank) {
  const int n = 3;
  std::vector<model::ResNeXt> replicas;
  for (int r = 0; r < n; ++r) replicas.push_back(make_model(100 + r));  // different inits
  auto group = comm::make_thread_group(n);
  std::vector<std::string> messages(n);
  // A rank whose broadcast or first verification throws fails the test naming the rank (it used to
  // escape its std::thread and std::terminate the binary).
  const auto errors = rx::testing::run_ranks(n, [&](int r) {
    parallel::broadcast_module_state(*replicas[r], *group[r], 0, comm::Millis(20000));
    parallel::verify_replicas(*replicas[r], *group[r], "after broadcast", comm::Millis(20000));
    if (r == 2) {
      torch::NoGradGuard ng;
      replicas[r]->parameters()[5].view({-1})[0].add_(1e-6);
    }
    try {
      parallel::verify_replicas(*replicas[r], *group[r], "after tampering", comm::Millis(20000));
    } catch (const CommError& e) {
      messages[r] = e.what();
    }
  });
  ASSERT_TRUE(rx::testing::all_ranks_ok(errors));
  for (int r = 0; r < n; ++r) {
    EXPECT_NE(messages[r].find("rank(s) 2"), std::string::npos) << "rank " << r << ": " << messages[r];
  }
}
