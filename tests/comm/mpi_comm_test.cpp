// MPI backend under mpiexec -np N (registered as test_mpi_comm_np1..4). Each rank fills
// rank-dependent values; results are compared with closed forms. All ranks agree on the verdict:
// the exit code is the job-wide failure count, so one failing rank fails every rank.
#include <gtest/gtest.h>
#include <mpi.h>

#include <chrono>
#include <cstdio>
#include <memory>

#include "common/comm/communicator.h"
#include "common/comm/factory.h"
#include "common/comm/mpi/mpi_check.h"
#include "common/comm/mpi/mpi_communicator.h"
#include "common/util/error.h"

namespace rx::comm {
namespace {

constexpr Millis kTimeout{60000};
Communicator* g_comm = nullptr;

Communicator& comm() { return *g_comm; }

// value(r, i) = (r + 1) + (i % 1024): small integers, so float32 sums are exact.
double base(int64_t i) { return static_cast<double>(i % 1024); }

template <typename T>
torch::Tensor filled(int64_t n, c10::ScalarType dtype, int rank) {
  torch::Tensor t = torch::empty({n}, dtype);
  T* p = t.data_ptr<T>();
  for (int64_t i = 0; i < n; ++i) p[i] = static_cast<T>((rank + 1) + base(i));
  return t;
}

template <typename T>
int64_t count_wrong(const torch::Tensor& t, const std::function<double(int64_t)>& expected, double tol = 0) {
  const T* p = t.data_ptr<T>();
  int64_t bad = 0;
  for (int64_t i = 0; i < t.numel(); ++i) {
    if (std::abs(static_cast<double>(p[i]) - expected(i)) > tol) ++bad;
  }
  return bad;
}

class MpiAllreduceSizes : public ::testing::TestWithParam<int64_t> {};

TEST_P(MpiAllreduceSizes, SumAvgMaxMinFloat32) {
  const int64_t n = GetParam();
  const int w = comm().world_size(), r = comm().rank();
  const double rank_sum = w * (w + 1) / 2.0;  // sum of (r + 1)
  torch::Tensor sum = filled<float>(n, torch::kFloat, r);
  torch::Tensor avg = sum.clone(), mx = sum.clone(), mn = sum.clone();
  auto w1 = comm().allreduce(sum);
  auto w2 = comm().allreduce(avg, {ReduceOp::kAvg, kTimeout});
  auto w3 = comm().allreduce(mx, {ReduceOp::kMax, kTimeout});
  auto w4 = comm().allreduce(mn, {ReduceOp::kMin, kTimeout});
  w3->wait(kTimeout);
  w1->wait(kTimeout);
  w4->wait(kTimeout);
  w2->wait();
  EXPECT_EQ(count_wrong<float>(sum, [&](int64_t i) { return rank_sum + w * base(i); }), 0);
  EXPECT_EQ(count_wrong<float>(
                avg, [&](int64_t i) { return (rank_sum + w * base(i)) / w; }, 1e-4),
            0);
  EXPECT_EQ(count_wrong<float>(mx, [&](int64_t i) { return w + base(i); }), 0);
  EXPECT_EQ(count_wrong<float>(mn, [&](int64_t i) { return 1 + base(i); }), 0);
}

INSTANTIATE_TEST_SUITE_P(Sizes, MpiAllreduceSizes,
                         ::testing::Values<int64_t>(1, 2, 3, 7, 1000, 65537, (1 << 20) + 3, 4000037));

TEST(MpiComm, Float64AndInt64) {
  const int w = comm().world_size(), r = comm().rank();
  torch::Tensor d = filled<double>(1001, torch::kDouble, r);
  comm().allreduce(d)->wait(kTimeout);
  EXPECT_EQ(count_wrong<double>(d, [&](int64_t i) { return w * (w + 1) / 2.0 + w * base(i); }), 0);
  // Counters beyond 2^32 must survive (no silent narrowing to int).
  torch::Tensor c = torch::full({3}, (int64_t{1} << 40) + r, torch::kLong);
  comm().allreduce(c)->wait(kTimeout);
  EXPECT_EQ(c[2].item<int64_t>(), w * (int64_t{1} << 40) + int64_t{w} * (w - 1) / 2);
  torch::Tensor m = torch::full({1}, int64_t{100} * r, torch::kLong);
  comm().allreduce(m, {ReduceOp::kMax, kTimeout})->wait(kTimeout);
  EXPECT_EQ(m.item<int64_t>(), int64_t{100} * (w - 1));
}

TEST(MpiComm, BroadcastFromEveryRoot) {
  const int w = comm().world_size(), r = comm().rank();
  for (int root = 0; root < w; ++root) {
    torch::Tensor t = filled<float>(4099, torch::kFloat, r);
    comm().broadcast(t, {root, kTimeout})->wait(kTimeout);
    EXPECT_EQ(count_wrong<float>(t, [&](int64_t i) { return root + 1 + base(i); }), 0) << "root " << root;
  }
  // 2-byte elements travel too (no reduction needed).
  torch::Tensor h = torch::full({5}, r == 0 ? 1.5 : -1.0, torch::kHalf);
  comm().broadcast(h)->wait(kTimeout);
  EXPECT_FLOAT_EQ(h[4].item<float>(), 1.5f);
}

TEST(MpiComm, Allgather) {
  const int w = comm().world_size(), r = comm().rank();
  const int64_t n = 333;
  torch::Tensor in = filled<float>(n, torch::kFloat, r);
  torch::Tensor out = torch::full({w * n}, -1.0f);
  comm().allgather(in, out)->wait(kTimeout);
  EXPECT_EQ(count_wrong<float>(out, [&](int64_t i) { return i / n + 1 + base(i % n); }), 0);
  torch::Tensor longs = torch::full({2}, int64_t{r}, torch::kLong), all = torch::empty({2 * w}, torch::kLong);
  comm().allgather(longs, all)->wait(kTimeout);
  for (int q = 0; q < w; ++q) EXPECT_EQ(all[2 * q + 1].item<int64_t>(), q);
}

// [Capabilities] What the mpi backend states is what it does: the listed dtypes all-reduce, the
// others (float16/bfloat16 among them: the reducer's compression check relies on it) are refused.
TEST(MpiComm, CapabilitiesMatchBehaviour) {
  const auto caps = comm().capabilities();
  EXPECT_FALSE(caps.can_allreduce(c10::kHalf));
  EXPECT_FALSE(caps.can_allreduce(c10::kBFloat16));
  EXPECT_EQ(caps.device, c10::DeviceType::CPU);
  int listed = 0;
  for (auto t : {c10::kFloat, c10::kDouble, c10::kHalf, c10::kBFloat16, c10::kByte, c10::kChar, c10::kShort,
                 c10::kInt, c10::kLong, c10::kBool}) {
    torch::Tensor x = torch::ones({4}, torch::TensorOptions().dtype(t));
    bool ok = true;
    try {
      comm().allreduce(x, {ReduceOp::kSum, kTimeout})->wait(kTimeout);  // refused alike on every rank
    } catch (const CommError&) {
      ok = false;
    }
    EXPECT_EQ(ok, caps.can_allreduce(t)) << c10::toString(t);
    listed += caps.can_allreduce(t);
  }
  EXPECT_EQ(listed, static_cast<int>(caps.allreduce_dtypes.size()));
}

TEST(MpiComm, BarrierAndRanks) {
  comm().barrier(kTimeout);
  EXPECT_EQ(comm().backend_name(), "mpi");
  int world = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  EXPECT_EQ(comm().world_size(), world);
  EXPECT_GE(comm().local_rank(), 0);
  EXPECT_LT(comm().local_rank(), comm().local_size());
  EXPECT_LE(comm().local_size(), comm().world_size());
  // local_size is the same on every rank of one node (all ranks here share the machine).
  torch::Tensor ls = torch::full({1}, int64_t{comm().local_size()}, torch::kLong);
  comm().allreduce(ls, {ReduceOp::kMin, kTimeout})->wait(kTimeout);
  EXPECT_EQ(ls.item<int64_t>(), comm().local_size());
}

TEST(MpiComm, BadArguments) {
  torch::Tensor strided = torch::ones({4, 4}).t();
  EXPECT_THROW(comm().allreduce(strided), CommError);
  torch::Tensor half = torch::ones({4}, torch::kHalf);
  try {
    comm().allreduce(half);
    FAIL();
  } catch (const CommError& e) {
    EXPECT_EQ(e.backend(), "mpi");
    EXPECT_NE(std::string(e.what()).find("allreduce of Half is not supported by the mpi backend"),
              std::string::npos)
        << e.what();
  }
  torch::Tensor empty = torch::empty({0});
  EXPECT_TRUE(comm().allreduce(empty)->is_completed());
}

TEST(MpiComm, FactoryChoosesMpiOnCpu) {
  auto c = make_communicator("auto", /*cuda_device=*/false);
  EXPECT_EQ(c->backend_name(), "mpi");
  EXPECT_EQ(c->rank(), comm().rank());
  EXPECT_THROW(make_communicator("gloo", false), ConfigError);
  if (!has_nccl_backend()) {
    try {
      make_communicator("nccl", true);
      FAIL();
    } catch (const ConfigError& e) {
      EXPECT_EQ(e.field(), "distributed.backend");
      EXPECT_EQ(e.message(), "this build has no NCCL (built without a CUDA LibTorch)");
    }
  }
}

TEST(MpiComm, MpiCheckNamesCallErrorAndRank) {
  MPI_Comm dup = MPI_COMM_NULL;
  RX_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &dup));
  RX_MPI_CHECK(MPI_Comm_set_errhandler(dup, MPI_ERRORS_RETURN));
  int x = 0;
  try {
    RX_MPI_CHECK(MPI_Bcast(&x, 1, MPI_INT, 1 << 20, dup));  // root out of range: argument error
    ADD_FAILURE() << "bad root accepted";
  } catch (const CommError& e) {
    const std::string msg = e.what();
    EXPECT_EQ(e.backend(), "mpi");
    EXPECT_EQ(e.rank(), comm().rank());
    EXPECT_NE(msg.find("MPI_Bcast(&x, 1, MPI_INT, 1 << 20, dup) failed: "), std::string::npos) << msg;
    EXPECT_GT(msg.size(), msg.find("failed: ") + 8) << "no MPI error string: " << msg;
  }
  RX_MPI_CHECK(MPI_Comm_free(&dup));
}

// A rank that does not join makes the others' wait() throw within the timeout instead of hanging.
// The operation stays pending, so when the straggler joins later a second wait completes it.
TEST(MpiComm, MissingRankTimesOutThenCompletes) {
  if (comm().world_size() < 2) GTEST_SKIP() << "needs two ranks";
  auto side = make_mpi_communicator(MPI_COMM_WORLD);  // fresh context for the pending operation
  const int r = comm().rank(), w = comm().world_size();
  torch::Tensor t = torch::full({10}, 1.0f);
  std::shared_ptr<Work> work;
  if (r != w - 1) {
    work = side->allreduce(t);
    const auto start = std::chrono::steady_clock::now();
    try {
      work->wait(Millis{200});
      ADD_FAILURE() << "allreduce completed without the last rank";
    } catch (const CommError& e) {
      const auto elapsed = std::chrono::steady_clock::now() - start;
      EXPECT_GE(elapsed, Millis{200});
      EXPECT_LT(elapsed, Millis{5000});
      EXPECT_EQ(e.rank(), r);
      EXPECT_NE(std::string(e.what()).find("[mpi rank " + std::to_string(r) +
                                           "] allreduce of 10 elements timed out after 200 ms"),
                std::string::npos)
          << e.what();
    }
  }
  comm().barrier(kTimeout);  // everyone is past the timeout; now the last rank joins
  if (r == w - 1) work = side->allreduce(t);
  work->wait(kTimeout);
  EXPECT_EQ(count_wrong<float>(t, [&](int64_t) { return w; }), 0);
}

// Rank 0 prints the usual gtest log; the other ranks print only their failures, tagged with the rank.
class FailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit FailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (!r.failed()) return;
    std::fprintf(stderr, "[rank %d] %s:%d: %s\n", rank_, r.file_name() ? r.file_name() : "?", r.line_number(),
                 r.summary());
  }

 private:
  int rank_;
};

}  // namespace
}  // namespace rx::comm

int main(int argc, char** argv) {
  try {
    rx::comm::MpiRuntime mpi(&argc, &argv);
    ::testing::InitGoogleTest(&argc, argv);
    int failures = 0;
    {
      auto comm = rx::comm::make_mpi_communicator(MPI_COMM_WORLD);
      rx::comm::g_comm = comm.get();
      if (comm->rank() != 0) {
        auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
        delete listeners.Release(listeners.default_result_printer());
        listeners.Append(new rx::comm::FailurePrinter(comm->rank()));
      }
      int local = RUN_ALL_TESTS() != 0 ? 1 : 0;
      // Agree on the verdict with plain MPI (not the code under test).
      MPI_Allreduce(&local, &failures, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
      if (comm->rank() == 0)
        std::printf("[mpi_comm_test] %d of %d ranks failed\n", failures, comm->world_size());
      rx::comm::g_comm = nullptr;
    }
    return failures == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mpi_comm_test: %s\n", e.what());
    rx::comm::MpiRuntime::abort(1);
  }
}
