// Ranks that share one GPU (mpiexec -np 2 on a one-GPU machine): NCCL refuses two ranks on one
// device, so the mpi backend carries the CUDA gradients through host memory (comm/host_staging.h).
// The multi-rank trainer logic (bucketed Reducer with autograd hooks, SGD) on CUDA tensors must give
// bit-identical replicas that equal one process stepping on the doubled batch (within 1e-5).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "common/comm/factory.h"
#include "common/comm/mpi/mpi_communicator.h"
#include "common/model/resnext.h"
#include "common/parallel/reducer.h"
#include "common/parallel/replica_sync.h"
#include "tests/gpu/gpu_test_util.h"

using namespace rx;

namespace {

constexpr comm::Millis kTimeout{60000};

model::ResNeXt make_model(torch::Device device) {
  torch::manual_seed(7);
  auto spec = model::preset("resnext20_tiny");
  spec.in_channels = 1;
  model::ResNeXt m(spec);
  m->eval();  // BN on running statistics: per-sample independence, as the equivalence needs
  m->to(device);
  return m;
}

torch::Tensor flat_params(const model::ResNeXt& m) {
  std::vector<torch::Tensor> ps;
  for (const auto& p : m->parameters()) ps.push_back(p.detach().reshape({-1}).to(torch::kCPU));
  return torch::cat(ps);
}

TEST(SharedGpu, RanksSharingOneGpuMatchOneProcessWithTheWholeBatch) {
  RX_REQUIRE_GPUS(1);
  // Exact fp32 on both sides: TF32 would round the two (differently sized) convolutions differently.
  at::globalContext().setAllowTF32CuDNN(false);
  at::globalContext().setAllowTF32CuBLAS(false);
  auto c = comm::make_communicator("mpi", /*cuda_device=*/true);
  ASSERT_EQ(c->backend_name(), "mpi");
  const int n = c->world_size(), r = c->rank();
  const torch::Device device(torch::kCUDA,
                             static_cast<c10::DeviceIndex>(c->local_rank() % torch::cuda::device_count()));

  auto replica = make_model(device);
  auto reference = make_model(device);
  const auto start = flat_params(reference);
  parallel::ReducerOptions ro;
  ro.bucket_mb = 0.05;  // several buckets, launched from the hooks during backward
  ro.first_bucket_mb = 0.01;
  ro.timeout = kTimeout;
  parallel::Reducer reducer(*replica, *c, ro);
  const auto sgd = torch::optim::SGDOptions(0.05).momentum(0.9).weight_decay(5e-4);
  torch::optim::SGD opt(replica->parameters(), sgd), ref_opt(reference->parameters(), sgd);

  const int64_t b = 4;
  torch::manual_seed(99);  // every rank draws the same whole batches and takes its slice
  for (int step = 0; step < 3; ++step) {
    auto x = torch::randn({n * b, 1, 28, 28}).to(device);
    auto y = torch::randint(0, 10, {n * b}, torch::kInt64).to(device);
    opt.zero_grad();
    reducer.prepare_for_backward(true);
    torch::nn::functional::cross_entropy(replica->forward(x.narrow(0, r * b, b)), y.narrow(0, r * b, b))
        .backward();
    reducer.finalize();
    opt.step();
    ref_opt.zero_grad();
    torch::nn::functional::cross_entropy(reference->forward(x), y).backward();
    ref_opt.step();
  }
  EXPECT_TRUE(replica->parameters()[0].is_cuda());
  const auto mine = flat_params(replica), want = flat_params(reference);
  const double diff = (mine - want).abs().max().item<double>();
  EXPECT_LT(diff, 1e-5) << "rank " << r << " of " << n << " differs from the one-process step by " << diff;
  EXPECT_GT((want - start).abs().max().item<double>(), 1e-4) << "the steps did not change the parameters";

  // Bit-identical replicas: every rank's checksum equals rank 0's.
  auto sum =
      torch::tensor({static_cast<int64_t>(parallel::parameter_checksum(*replica) >> 1)}, torch::kInt64);
  auto all = torch::empty({n}, torch::kInt64);
  c->allgather(sum, all, {kTimeout})->wait(kTimeout);
  for (int k = 0; k < n; ++k) EXPECT_EQ(all[k].item<int64_t>(), all[0].item<int64_t>()) << "rank " << k;
}

TEST(SharedGpu, StagedCollectivesOnCudaTensors) {
  RX_REQUIRE_GPUS(1);
  auto c = comm::make_communicator("mpi", /*cuda_device=*/true);
  const int n = c->world_size(), r = c->rank();
  const auto dev = torch::TensorOptions().device(torch::kCUDA, c->local_rank() % torch::cuda::device_count());
  torch::Tensor t = torch::arange(1001, dev.dtype(torch::kFloat)) + r;
  c->allreduce(t)->wait(kTimeout);
  EXPECT_TRUE(t.is_cuda());
  EXPECT_TRUE(torch::equal(t.cpu(), torch::arange(1001, torch::kFloat) * n + n * (n - 1) / 2.0));
  torch::Tensor b = torch::full({17}, 10.0 * r, dev.dtype(torch::kDouble));
  c->broadcast(b, {n - 1, kTimeout})->wait(kTimeout);
  EXPECT_EQ(b.sum().item<double>(), 17 * 10.0 * (n - 1));
  torch::Tensor in = torch::full({3}, int64_t{r}, dev.dtype(torch::kLong));
  torch::Tensor out = torch::full({3 * n}, int64_t{-1}, dev.dtype(torch::kLong));
  c->allgather(in, out)->wait(kTimeout);
  for (int k = 0; k < n; ++k) EXPECT_EQ(out[3 * k + 2].item<int64_t>(), k);
}

}  // namespace

int main(int argc, char** argv) {
  rx::comm::MpiRuntime mpi(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
