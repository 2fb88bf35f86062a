// NCCL backend. Always built so that CTest lists it; in a CPU build (no RX_WITH_CUDA) or without a
// visible GPU every test GTEST_SKIPs with a "SKIPPED: no CUDA ..." reason, which the CTest
// SKIP_REGULAR_EXPRESSION turns into a reported skip. In a CUDA build the binary initialises MPI
// as a singleton (one rank: NCCL refuses two ranks on one GPU) and checks the ops end to end.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>

#include "common/comm/communicator.h"
#include "common/comm/factory.h"
#include "common/util/error.h"
#ifdef RX_WITH_CUDA
#include "common/comm/mpi/mpi_communicator.h"
#include "common/comm/nccl/nccl_communicator.h"
#endif

namespace rx::comm {
namespace {

#ifndef RX_WITH_CUDA

TEST(NcclComm, RequiresCudaBuild) {
  EXPECT_FALSE(has_nccl_backend());
  GTEST_SKIP() << "SKIPPED: no CUDA LibTorch/GPU in this build";
}

#else

constexpr Millis kTimeout{60000};

std::unique_ptr<Communicator> make_or_skip() {
  if (!torch::cuda::is_available()) return nullptr;
  return make_communicator("nccl", /*cuda_device=*/true);
}

#define RX_SKIP_WITHOUT_GPU(c) \
  if (!(c)) GTEST_SKIP() << "SKIPPED: no CUDA GPU visible"

TEST(NcclComm, AllreduceBroadcastAllgatherBarrier) {
  auto c = make_or_skip();
  RX_SKIP_WITHOUT_GPU(c);
  EXPECT_EQ(c->backend_name(), "nccl");
  const int w = c->world_size();
  const auto dev = torch::TensorOptions().device(torch::kCUDA, c->local_rank());
  for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{1000}, int64_t{(1 << 20) + 3}}) {
    torch::Tensor t = torch::arange(n, dev.dtype(torch::kFloat)).remainder(1024) + (c->rank() + 1);
    c->allreduce(t)->wait(kTimeout);
    torch::Tensor expected = torch::arange(n, dev.dtype(torch::kFloat)).remainder(1024) * w + w * (w + 1) / 2.0;
    EXPECT_TRUE(torch::equal(t, expected)) << n;
    torch::Tensor a = torch::full({n}, 2.0, dev.dtype(torch::kHalf));
    c->allreduce(a, {ReduceOp::kAvg, kTimeout})->wait(kTimeout);
    EXPECT_EQ(a.to(torch::kFloat).sum().item<float>(), 2.0f * n);
  }
  torch::Tensor b = torch::full({5}, static_cast<double>(c->rank()), dev.dtype(torch::kDouble));
  c->broadcast(b)->wait(kTimeout);
  EXPECT_EQ(b.sum().item<double>(), 0.0);
  torch::Tensor in = torch::full({3}, int64_t{c->rank()}, dev.dtype(torch::kLong));
  torch::Tensor out = torch::empty({3 * w}, dev.dtype(torch::kLong));
  c->allgather(in, out)->wait(kTimeout);
  EXPECT_EQ(out[3 * w - 1].item<int64_t>(), w - 1);
  c->barrier(kTimeout);
}

TEST(NcclComm, CpuTensorIsRejected) {
  auto c = make_or_skip();
  RX_SKIP_WITHOUT_GPU(c);
  torch::Tensor cpu = torch::ones({4});
  try {
    c->allreduce(cpu);
    FAIL();
  } catch (const CommError& e) {
    EXPECT_EQ(e.backend(), "nccl");
  }
}

#endif

}  // namespace
}  // namespace rx::comm

int main(int argc, char** argv) {
#ifdef RX_WITH_CUDA
  rx::comm::MpiRuntime mpi(&argc, &argv);
#endif
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
