// The NCCL backend at any world size (one rank per GPU): every collective over sizes from one element
// to 64 MiB, odd sizes included, several dtypes and ops, values that differ by rank so that a
// collective that did nothing fails; and a Work::wait timeout that fires and names backend and rank.
// Run directly (an MPI singleton, world size 1) and under mpiexec -np 2 (skipped below 2 GPUs).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "common/comm/communicator.h"
#include "common/comm/factory.h"
#include "common/comm/mpi/mpi_communicator.h"
#ifdef RX_WITH_CUDA
#include "common/comm/nccl/nccl_communicator.h"
#endif
#include "common/util/error.h"
#include "tests/gpu/gpu_test_util.h"
#ifdef RX_WITH_CUDA
#include <ATen/cuda/Sleep.h>
#endif

namespace rx::comm {
namespace {

constexpr Millis kTimeout{60000};

int world() {
  int w = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &w);
  return w;
}

#define RX_NCCL_OR_SKIP(c)                                  \
  RX_REQUIRE_GPUS(world());                                 \
  auto c = make_communicator("nccl", /*cuda_device=*/true); \
  ASSERT_EQ(c->backend_name(), "nccl")

// 1 element up to 16 Mi floats + 3 (just over 64 MiB), with odd sizes in between.
const std::vector<int64_t> kSizes = {1, 2, 3, 7, 1000, 4097, (1 << 20) + 3, (16 << 20) + 3};

TEST(NcclComm, AllreduceEverySizeAndOp) {
  RX_NCCL_OR_SKIP(c);
  const int w = c->world_size(), r = c->rank();
  const auto dev = torch::TensorOptions().device(torch::kCUDA, c->local_rank());
  for (int64_t n : kSizes) {
    auto base = torch::arange(n, dev.dtype(torch::kFloat)).remainder(1024);
    torch::Tensor t = base + (r + 1);  // exact in fp32: small integers
    c->allreduce(t)->wait(kTimeout);
    ASSERT_TRUE(torch::equal(t, base * w + w * (w + 1) / 2.0)) << "sum, n=" << n;

    torch::Tensor mx = base + 10.0 * r;
    c->allreduce(mx, {ReduceOp::kMax, kTimeout})->wait(kTimeout);
    ASSERT_TRUE(torch::equal(mx, base + 10.0 * (w - 1))) << "max, n=" << n;
    torch::Tensor mn = base + 10.0 * r;
    c->allreduce(mn, {ReduceOp::kMin, kTimeout})->wait(kTimeout);
    ASSERT_TRUE(torch::equal(mn, base)) << "min, n=" << n;

    for (auto dtype : {torch::kHalf, torch::kBFloat16}) {
      torch::Tensor h = torch::full({n}, 2.0 * (r + 1), dev.dtype(dtype));
      c->allreduce(h, {ReduceOp::kAvg, kTimeout})->wait(kTimeout);
      ASSERT_TRUE(torch::equal(h, torch::full({n}, static_cast<double>(w + 1), dev.dtype(dtype))))
          << "avg " << dtype << " n=" << n;
    }
    torch::Tensor i = torch::full({n}, int64_t{r + 1}, dev.dtype(torch::kLong));
    c->allreduce(i)->wait(kTimeout);
    ASSERT_EQ(i.min().item<int64_t>(), int64_t{w} * (w + 1) / 2) << "int64 sum, n=" << n;
    ASSERT_EQ(i.max().item<int64_t>(), int64_t{w} * (w + 1) / 2) << "int64 sum, n=" << n;
  }
}

// [Broadcast needs two ranks] Every rank starts from values that differ by rank; after the broadcast
// every rank holds the root's. With one rank the root's values are already everywhere, so a broadcast
// that moved nothing would pass: the check runs at world size >= 2 (gpu_nccl_np2) and skips, saying
// so, in the singleton run.
TEST(NcclComm, BroadcastEverySize) {
  RX_NCCL_OR_SKIP(c);
  const int w = c->world_size(), r = c->rank();
  if (w < 2) GTEST_SKIP() << "a broadcast at world size 1 moves no data; gpu_nccl_np2 checks it";
  const auto dev = torch::TensorOptions().device(torch::kCUDA, c->local_rank());
  const int root = w - 1;  // not rank 0: a broadcast that used rank 0's data fails too
  for (int64_t n : kSizes) {
    const torch::Tensor want = torch::arange(n, dev.dtype(torch::kDouble)) + 1000.0 * root;
    torch::Tensor b = torch::arange(n, dev.dtype(torch::kDouble)) + 1000.0 * r;
    if (r != root) {
      ASSERT_FALSE(torch::equal(b, want)) << "the input must differ from the root's";
    }
    c->broadcast(b, {root, kTimeout})->wait(kTimeout);
    ASSERT_TRUE(torch::equal(b, want)) << "rank " << r << " n=" << n;
  }
  c->barrier(kTimeout);
}

// The output starts at -1 everywhere and each rank's block is distinct, so an allgather that did
// nothing, or put a block in the wrong place, fails even at world size 1.
TEST(NcclComm, AllgatherEverySize) {
  RX_NCCL_OR_SKIP(c);
  const int w = c->world_size(), r = c->rank();
  const auto dev = torch::TensorOptions().device(torch::kCUDA, c->local_rank());
  for (int64_t n : kSizes) {
    auto block = [&](int rank) {
      return torch::arange(n, dev.dtype(torch::kFloat)).remainder(4096) + 5000.0f * rank;
    };
    torch::Tensor out = torch::full({n * w}, -1.0f, dev.dtype(torch::kFloat));
    c->allgather(block(r), out)->wait(kTimeout);
    for (int k = 0; k < w; ++k)
      ASSERT_TRUE(torch::equal(out.narrow(0, k * n, n), block(k))) << "block " << k << " n=" << n;
  }
  c->barrier(kTimeout);
}

TEST(NcclComm, EmptyTensorCompletesAndCpuTensorIsRejected) {
  RX_REQUIRE_GPUS(world());
#ifdef RX_WITH_CUDA
  auto raw = make_nccl_communicator(MPI_COMM_WORLD);  // the backend itself, without staging
  torch::Tensor empty = torch::empty({0}, torch::TensorOptions().device(torch::kCUDA, raw->local_rank()));
  EXPECT_TRUE(raw->allreduce(empty)->is_completed());
  torch::Tensor cpu = torch::ones({4});
  try {
    raw->allreduce(cpu);
    FAIL() << "a CPU tensor was accepted";
  } catch (const CommError& e) {
    EXPECT_EQ(e.backend(), "nccl");
    EXPECT_EQ(e.rank(), raw->rank());
    EXPECT_NE(std::string(e.what()).find("cuda:"), std::string::npos) << e.what();
  }
#endif
}

// What the trainer relies on: make_communicator("nccl") stages CPU tensors through the GPU.
TEST(NcclComm, CpuTensorsAreStagedThroughTheGpu) {
  RX_NCCL_OR_SKIP(c);
  const int w = c->world_size(), r = c->rank();
  torch::Tensor flag = torch::tensor({int64_t{r + 1}}, torch::kInt64);
  c->allreduce(flag, {ReduceOp::kMax, kTimeout})->wait(kTimeout);
  EXPECT_TRUE(flag.device().is_cpu());
  EXPECT_EQ(flag.item<int64_t>(), w);
  torch::Tensor sums = torch::tensor({1.5 * (r + 1), 2.0}, torch::kFloat64);
  c->allreduce(sums)->wait(kTimeout);
  EXPECT_EQ(sums[0].item<double>(), 1.5 * w * (w + 1) / 2);
  torch::Tensor in = torch::full({64}, static_cast<uint8_t>('a' + r), torch::kUInt8);
  torch::Tensor out = torch::zeros({64 * w}, torch::kUInt8);
  c->allgather(in, out)->wait(kTimeout);
  for (int k = 0; k < w; ++k) EXPECT_EQ(out[64 * k + 63].item<uint8_t>(), 'a' + k);
}

// [Timeout test] The collective is queued behind a ~2 s spin kernel on the compute stream (the NCCL
// stream waits for it), so it cannot finish within the 50 ms deadline: wait() must throw CommError
// naming nccl and this rank, and the aborted communicator must refuse further work.
TEST(NcclComm, WaitTimeoutFiresAndNamesBackendAndRank) {
  RX_NCCL_OR_SKIP(c);
  const auto dev = torch::TensorOptions().device(torch::kCUDA, c->local_rank());
  torch::Tensor t = torch::ones({1024}, dev);
#ifdef RX_WITH_CUDA
  at::cuda::sleep(int64_t{4} << 30);  // ~2 s at ~2 GHz
#endif
  auto work = c->allreduce(t, {ReduceOp::kSum, Millis{50}});
  const auto t0 = std::chrono::steady_clock::now();
  try {
    work->wait();
    FAIL() << "the wait did not time out";
  } catch (const CommError& e) {
    EXPECT_EQ(e.backend(), "nccl");
    EXPECT_EQ(e.rank(), c->rank());
    EXPECT_NE(std::string(e.what()).find("timed out after 50 ms"), std::string::npos) << e.what();
  }
  // ncclCommAbort returns once the stream drains the spin kernel queued ahead of the collective (~2 s
  // on an H200); a peer that never arrives is aborted inside NCCL's kernel instead.
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(20)) << "the timeout fired late";
  EXPECT_THROW(c->allreduce(t), CommError);  // aborted
  torch::cuda::synchronize();
}

}  // namespace
}  // namespace rx::comm

int main(int argc, char** argv) {
  rx::comm::MpiRuntime mpi(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
