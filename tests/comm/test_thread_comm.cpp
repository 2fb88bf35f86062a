// Thread backend: multi-rank semantics without mpiexec. Every rank runs on its own thread; results
// are compared with values computed here independently (plain loops, not torch reductions).
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <string>
#include <tuple>
#include <vector>

#include "common/comm/communicator.h"
#include "common/comm/thread/thread_communicator.h"
#include "common/util/error.h"
#include "tests/support/rank_threads.h"

namespace rx::comm {
namespace {

constexpr Millis kTimeout{20000};

// Runs fn(comm) on one thread per rank (tests/support/rank_threads.h); each rank's error, "" if none.
std::vector<std::string> run_ranks(std::vector<std::unique_ptr<Communicator>>& group,
                                   const std::function<void(Communicator&)>& fn) {
  return rx::testing::run_ranks(static_cast<int>(group.size()), [&](int r) { fn(*group[r]); });
}

void expect_no_errors(const std::vector<std::string>& errors) {
  EXPECT_TRUE(rx::testing::all_ranks_ok(errors));
}

// Rank-dependent integer-valued input, exact in float32: max/min come from different ranks.
float value(int rank, int64_t i) { return static_cast<float>((i * 7 + rank * 13) % 101 - 50); }

torch::Tensor input_for(int rank, int64_t n) {
  torch::Tensor t = torch::empty({n}, torch::kFloat);
  float* p = t.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) p[i] = value(rank, i);
  return t;
}

// Number of elements of `t` that differ from expected(i).
int64_t mismatches(const torch::Tensor& t, const std::function<double(int64_t)>& expected, double tol = 0) {
  const float* p = t.data_ptr<float>();
  int64_t bad = 0;
  for (int64_t i = 0; i < t.numel(); ++i) {
    if (std::abs(static_cast<double>(p[i]) - expected(i)) > tol) ++bad;
  }
  return bad;
}

class ThreadCommTest : public ::testing::TestWithParam<std::tuple<int, int64_t>> {};

TEST_P(ThreadCommTest, AllreduceSumAvgMax) {
  const auto [world, n] = GetParam();
  auto group = make_thread_group(world);
  std::vector<torch::Tensor> sum(world), avg(world), mx(world), mn(world);
  auto errors = run_ranks(group, [&](Communicator& c) {
    const int r = c.rank();
    sum[r] = input_for(r, n);
    avg[r] = input_for(r, n);
    mx[r] = input_for(r, n);
    mn[r] = input_for(r, n);
    // Post all four before waiting: several outstanding operations per rank must work.
    auto w1 = c.allreduce(sum[r]);
    auto w2 = c.allreduce(avg[r], {ReduceOp::kAvg, kTimeout});
    auto w3 = c.allreduce(mx[r], {ReduceOp::kMax, kTimeout});
    auto w4 = c.allreduce(mn[r], {ReduceOp::kMin, kTimeout});
    w4->wait(kTimeout);  // out of order on purpose
    w1->wait(kTimeout);
    w3->wait(kTimeout);
    w2->wait(kTimeout);
    if (!w1->is_completed()) throw std::runtime_error("completed work reports incomplete");
  });
  expect_no_errors(errors);
  auto exp_sum = [&](int64_t i) {
    double s = 0;
    for (int r = 0; r < world; ++r) s += value(r, i);
    return s;
  };
  auto exp_max = [&](int64_t i) {
    double m = value(0, i);
    for (int r = 1; r < world; ++r) m = std::max<double>(m, value(r, i));
    return m;
  };
  auto exp_min = [&](int64_t i) {
    double m = value(0, i);
    for (int r = 1; r < world; ++r) m = std::min<double>(m, value(r, i));
    return m;
  };
  for (int r = 0; r < world; ++r) {
    EXPECT_EQ(mismatches(sum[r], exp_sum), 0) << "sum, rank " << r;
    EXPECT_EQ(mismatches(
                  avg[r], [&](int64_t i) { return exp_sum(i) / world; }, 1e-5),
              0)
        << "avg, rank " << r;
    EXPECT_EQ(mismatches(mx[r], exp_max), 0) << "max, rank " << r;
    EXPECT_EQ(mismatches(mn[r], exp_min), 0) << "min, rank " << r;
    // Every rank holds bit-identical results (rank-order reduction).
    EXPECT_TRUE(torch::equal(avg[r], avg[0])) << "rank " << r;
  }
}

TEST_P(ThreadCommTest, BroadcastFromRoot1) {
  const auto [world, n] = GetParam();
  if (world < 2) GTEST_SKIP() << "broadcast from root 1 needs two ranks";
  auto group = make_thread_group(world);
  std::vector<torch::Tensor> t(world);
  auto errors = run_ranks(group, [&](Communicator& c) {
    t[c.rank()] = input_for(c.rank(), n);
    c.broadcast(t[c.rank()], {1, kTimeout})->wait(kTimeout);
  });
  expect_no_errors(errors);
  for (int r = 0; r < world; ++r) EXPECT_EQ(mismatches(t[r], [](int64_t i) { return value(1, i); }), 0) << r;
}

TEST_P(ThreadCommTest, Allgather) {
  const auto [world, n] = GetParam();
  auto group = make_thread_group(world);
  std::vector<torch::Tensor> out(world);
  auto errors = run_ranks(group, [&](Communicator& c) {
    torch::Tensor in = input_for(c.rank(), n);
    out[c.rank()] = torch::full({world * n}, -999.0f);
    c.allgather(in, out[c.rank()])->wait(kTimeout);
  });
  expect_no_errors(errors);
  for (int r = 0; r < world; ++r) {
    EXPECT_EQ(mismatches(out[r], [&](int64_t i) { return value(static_cast<int>(i / n), i % n); }), 0) << r;
  }
}

INSTANTIATE_TEST_SUITE_P(WorldsAndSizes, ThreadCommTest,
                         ::testing::Combine(::testing::Values(1, 2, 3, 4),
                                            ::testing::Values<int64_t>(1, 7, 1000, (1 << 20) + 3)),
                         [](const auto& info) {
                           return "w" + std::to_string(std::get<0>(info.param)) + "_n" +
                                  std::to_string(std::get<1>(info.param));
                         });

TEST(ThreadComm, DtypesInt64AndFloat64) {
  auto group = make_thread_group(3);
  std::vector<torch::Tensor> i64(3), f64(3);
  auto errors = run_ranks(group, [&](Communicator& c) {
    const int r = c.rank();
    i64[r] = torch::full({5}, (int64_t{1} << 40) + r, torch::kLong);
    f64[r] = torch::full({5}, 0.1 * (r + 1), torch::kDouble);
    c.allreduce(i64[r])->wait(kTimeout);
    c.allreduce(f64[r], {ReduceOp::kAvg, kTimeout})->wait();  // default timeout from the options
  });
  expect_no_errors(errors);
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(i64[r][0].item<int64_t>(), 3 * (int64_t{1} << 40) + 3);
    EXPECT_NEAR(f64[r][4].item<double>(), 0.2, 1e-15);
  }
}

TEST(ThreadComm, BarrierAndManyRounds) {
  auto group = make_thread_group(4);
  std::vector<int64_t> totals(4);
  auto errors = run_ranks(group, [&](Communicator& c) {
    torch::Tensor t = torch::zeros({1}, torch::kLong);
    for (int step = 0; step < 200; ++step) {
      t.fill_(step + c.rank());
      c.allreduce(t)->wait(kTimeout);
      totals[c.rank()] += t.item<int64_t>();
      c.barrier(kTimeout);
    }
  });
  expect_no_errors(errors);
  // sum over steps of (4 * step + 0+1+2+3)
  for (int r = 0; r < 4; ++r) EXPECT_EQ(totals[r], 4 * (199 * 200 / 2) + 6 * 200) << r;
}

TEST(ThreadComm, MissingRankTimesOutInsteadOfHanging) {
  auto group = make_thread_group(2);
  torch::Tensor t = torch::ones({16});
  auto work = group[0]->allreduce(t);  // rank 1 never joins
  EXPECT_FALSE(work->is_completed());
  const auto start = std::chrono::steady_clock::now();
  try {
    work->wait(Millis{200});
    FAIL() << "wait returned without rank 1";
  } catch (const CommError& e) {
    const auto elapsed = std::chrono::steady_clock::now() - start;
    EXPECT_GE(elapsed, Millis{200});
    EXPECT_LT(elapsed, Millis{5000});
    EXPECT_EQ(e.backend(), "thread");
    EXPECT_EQ(e.rank(), 0);
    EXPECT_NE(std::string(e.what()).find("allreduce of 16 elements timed out after 200 ms"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(group[0]->barrier(Millis{50}), CommError);
  EXPECT_FLOAT_EQ(t[0].item<float>(), 1.0f);  // untouched
}

TEST(ThreadComm, LateRankCompletesAfterTimeout) {
  // A timeout leaves the operation pending; once the straggler arrives a second wait succeeds.
  auto group = make_thread_group(2);
  torch::Tensor a = torch::full({3}, 1.0f), b = torch::full({3}, 2.0f);
  auto wa = group[0]->allreduce(a);
  EXPECT_THROW(wa->wait(Millis{20}), CommError);
  auto wb = group[1]->allreduce(b);
  wa->wait(kTimeout);
  wb->wait(kTimeout);
  EXPECT_TRUE(torch::equal(a, torch::full({3}, 3.0f)));
  EXPECT_TRUE(torch::equal(b, torch::full({3}, 3.0f)));
}

TEST(ThreadComm, MismatchedCollectivesAreRejected) {
  auto group = make_thread_group(2);
  torch::Tensor a = torch::ones({4}), b = torch::ones({5});
  auto wa = group[0]->allreduce(a);
  try {
    group[1]->allreduce(b);
    FAIL() << "size mismatch accepted";
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find("does not match"), std::string::npos) << e.what();
  }
}

TEST(ThreadComm, BadArgumentsNameBackendAndOp) {
  auto group = make_thread_group(1);
  auto& c = *group[0];
  torch::Tensor strided = torch::ones({4, 4}).t();
  EXPECT_THROW(c.allreduce(strided), CommError);
  torch::Tensor ints = torch::ones({4}, torch::kLong);
  try {
    c.allreduce(ints, {ReduceOp::kAvg, kTimeout});
    FAIL();
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find("[thread rank 0] allreduce: avg needs a floating-point"),
              std::string::npos)
        << e.what();
  }
  torch::Tensor flags = torch::ones({4}, torch::kBool);
  try {
    c.allreduce(flags);
    FAIL();
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find("not supported by the thread backend"), std::string::npos)
        << e.what();
  }
  torch::Tensor in = torch::ones({3}), wrong = torch::ones({4});
  EXPECT_THROW(c.allgather(in, wrong), CommError);
  EXPECT_THROW(c.broadcast(in, {1, kTimeout}), CommError);  // root outside the group
}

// [Capabilities] What the thread backend states is what it does: every listed dtype all-reduces,
// every other one is refused with a CommError.
TEST(ThreadComm, CapabilitiesMatchBehaviour) {
  auto group = make_thread_group(1);
  Communicator& c = *group[0];
  const auto caps = c.capabilities();
  EXPECT_FALSE(caps.staged);
  EXPECT_EQ(caps.device, c10::DeviceType::CPU);
  EXPECT_TRUE(caps.can_allreduce(c10::kHalf)) << "the reducer's compression tests rely on it";
  int listed = 0;
  for (auto t : {c10::kFloat, c10::kDouble, c10::kHalf, c10::kBFloat16, c10::kByte, c10::kChar, c10::kShort,
                 c10::kInt, c10::kLong, c10::kBool, c10::kComplexFloat}) {
    torch::Tensor x = torch::ones({4}, torch::TensorOptions().dtype(t));
    bool ok = true;
    try {
      c.allreduce(x, {ReduceOp::kSum, kTimeout})->wait(kTimeout);
    } catch (const CommError&) {
      ok = false;
    }
    EXPECT_EQ(ok, caps.can_allreduce(t)) << c10::toString(t);
    listed += caps.can_allreduce(t);
  }
  EXPECT_EQ(listed, static_cast<int>(caps.allreduce_dtypes.size()));
  for (auto op : {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax, ReduceOp::kMin})
    EXPECT_TRUE(caps.supports(op));
}

// A backend that implements nothing: the defaults must name the op and the backend.
class BareCommunicator : public Communicator {
 public:
  std::string backend_name() const override { return "bare"; }
  int rank() const override { return 3; }
  int world_size() const override { return 4; }
};

TEST(Communicator, UnsupportedOpNamesBackend) {
  BareCommunicator c;
  torch::Tensor t = torch::ones({2}), out = torch::ones({8});
  try {
    c.broadcast(t);
    FAIL();
  } catch (const CommError& e) {
    EXPECT_EQ(std::string(e.what()), "[bare rank 3] broadcast is not supported by the bare backend");
    EXPECT_EQ(e.backend(), "bare");
    EXPECT_EQ(e.rank(), 3);
  }
  EXPECT_THROW(c.allreduce(t), CommError);
  EXPECT_THROW(c.allgather(t, out), CommError);
  EXPECT_THROW(c.barrier(), CommError);
  EXPECT_EQ(c.local_rank(), 3);
  EXPECT_EQ(c.local_size(), 4);
  EXPECT_TRUE(c.capabilities().allreduce_dtypes.empty()) << "states nothing it cannot do";
}

}  // namespace
}  // namespace rx::comm
