// The bucketed reducer against the plain flat all-reduce, in process: N ranks are threads over the
// thread backend (which sums in rank order, deterministically). Every comparison is exact: the
// reducer changes which elements travel together, never the per-element summation order.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <functional>
#include <numeric>
#include <set>

#include "common/comm/thread/thread_communicator.h"
#include "common/model/resnext.h"
#include "common/parallel/reducer.h"
#include "common/parallel/replica_sync.h"
#include "common/util/error.h"
#include "tests/support/rank_threads.h"

using namespace rx;

namespace {
const comm::Millis kTimeout{60000};

model::ResNeXt make_model(int seed) {
  torch::manual_seed(seed);
  auto spec = model::preset("resnext20_tiny");
  spec.in_channels = 1;
  return model::ResNeXt(spec);  // train mode: BN batch statistics, as in training
}

// Rank r's micro-batch m: distinct data everywhere, the same on every call.
std::pair<torch::Tensor, torch::Tensor> batch(int rank, int micro, int64_t b) {
  auto gen = at::detail::createCPUGenerator(1000 + 31 * rank + micro);
  auto x = torch::randn({b, 1, 28, 28}, gen);
  auto y = torch::randint(0, 10, {b}, gen, torch::kInt64);
  return {x, y};
}

void zero_grads(torch::nn::Module& m) {
  torch::NoGradGuard ng;
  for (auto& p : m.parameters())
    if (p.grad().defined()) p.mutable_grad().zero_();
}

// n models with the same seed, built on the calling thread: manual_seed and the initialisers use
// the global generator, so building them on the rank threads would race.
std::vector<model::ResNeXt> make_models(int n, int seed) {
  std::vector<model::ResNeXt> out;
  for (int r = 0; r < n; ++r) out.push_back(make_model(seed));
  return out;
}

using rx::testing::all_ranks_ok;  // the rank runner: tests/support/rank_threads.h
using rx::testing::run_ranks;

// One optimizer step's gradients: `accumulate` micro-batches, then the sync under test.
void flat_step(model::ResNeXt& m, parallel::FlatGradientAllreduce& sync, int rank, int accumulate) {
  zero_grads(*m);
  for (int k = 0; k < accumulate; ++k) {
    auto [x, y] = batch(rank, k, 3);
    (torch::nn::functional::cross_entropy(m->forward(x), y) / accumulate).backward();
  }
  sync.sync();
}

void reducer_step(model::ResNeXt& m, parallel::Reducer& red, int rank, int accumulate, int64_t b = 3) {
  zero_grads(*m);
  for (int k = 0; k < accumulate; ++k) {
    auto [x, y] = batch(rank, k, b);
    auto loss = torch::nn::functional::cross_entropy(m->forward(x), y) / accumulate;
    red.prepare_for_backward(k + 1 == accumulate);
    loss.backward();
  }
  red.finalize();
}

parallel::ReducerOptions options(double bucket_mb, double first_mb) {
  parallel::ReducerOptions o;
  o.bucket_mb = bucket_mb;
  o.first_bucket_mb = first_mb;
  o.timeout = kTimeout;
  return o;
}

struct Case {
  int world;
  double bucket_mb, first_mb;
  int accumulate;
};
void PrintTo(const Case& c, std::ostream* os) {
  *os << "world " << c.world << " bucket_mb " << c.bucket_mb << " first_bucket_mb " << c.first_mb
      << " accumulate " << c.accumulate;
}
std::string case_name(const ::testing::TestParamInfo<Case>& i) {
  auto mb = [](double v) {
    std::string s = std::to_string(v);
    for (auto& c : s)
      if (c == '.') c = '_';
    return s.substr(0, s.find_last_not_of('0') + 1);
  };
  return "w" + std::to_string(i.param.world) + "_mb" + mb(i.param.bucket_mb) + "_first" +
         mb(i.param.first_mb) + "_acc" + std::to_string(i.param.accumulate);
}
}  // namespace

class ReducerEqualsFlat : public ::testing::TestWithParam<Case> {};

// Same averaged gradients, bit for bit, as FlatGradientAllreduce (two steps: the second runs on
// the same bucket views after zero_grad).
TEST_P(ReducerEqualsFlat, SameAveragedGradients) {
  torch::set_num_threads(1);
  const Case c = GetParam();
  auto flat_group = comm::make_thread_group(c.world);
  auto red_group = comm::make_thread_group(c.world);
  auto as = make_models(c.world, 7), bs = make_models(c.world, 7);
  const auto errors = run_ranks(c.world, [&](int r) {
    auto a = as[r], b = bs[r];
    parallel::FlatGradientAllreduce flat(*a, *flat_group[r], kTimeout);
    parallel::Reducer red(*b, *red_group[r], options(c.bucket_mb, c.first_mb));
    for (int step = 0; step < 2; ++step) {
      flat_step(a, flat, r, c.accumulate);
      reducer_step(b, red, r, c.accumulate);
      auto pa = a->named_parameters(), pb = b->named_parameters();
      for (size_t i = 0; i < pa.size(); ++i)
        ASSERT_TRUE(torch::equal(pa[i].value().grad(), pb[i].value().grad()))
            << "rank " << r << " step " << step << " " << pa[i].key() << " max diff "
            << (pa[i].value().grad() - pb[i].value().grad()).abs().max().item<double>();
    }
  });
  ASSERT_TRUE(all_ranks_ok(errors));
}

INSTANTIATE_TEST_SUITE_P(Worlds, ReducerEqualsFlat,
                         ::testing::Values(Case{1, 25, 1, 1}, Case{1, 1e-6, 1e-6, 2}, Case{2, 1e-6, 1e-6, 1},
                                           Case{2, 0, 1, 1}, Case{2, 0.05, 0.01, 1}, Case{2, 25, 1, 2},
                                           Case{2, 100, 100, 1}, Case{2, 0.05, 0.01, 3}, Case{3, 0, 0, 2},
                                           Case{3, 0.1, 0.02, 1}, Case{4, 1e-6, 1e-6, 2},
                                           Case{4, 0.05, 0.01, 1}, Case{4, 100, 100, 2}),
                         case_name);

// Training: the same SGD (momentum, weight decay) trajectory as with the flat all-reduce, to the bit.
TEST(Reducer, TrainingIsBitIdenticalToFlatAllreduce) {
  torch::set_num_threads(1);
  const int n = 2, accumulate = 2;
  auto flat_group = comm::make_thread_group(n);
  auto red_group = comm::make_thread_group(n);
  std::vector<uint64_t> flat_sums(n), red_sums(n), start(n);
  auto as = make_models(n, 7), bs = make_models(n, 7);
  const auto errors = run_ranks(n, [&](int r) {
    auto a = as[r], b = bs[r];
    start[r] = parallel::parameter_checksum(*a);
    parallel::FlatGradientAllreduce flat(*a, *flat_group[r], kTimeout);
    parallel::Reducer red(*b, *red_group[r], options(0.05, 0.01));
    auto sgd = torch::optim::SGDOptions(0.1).momentum(0.9).nesterov(true).weight_decay(5e-4);
    torch::optim::SGD oa(a->parameters(), sgd), ob(b->parameters(), sgd);
    for (int step = 0; step < 4; ++step) {
      oa.zero_grad();  // as the trainer does (LibTorch 1.13: detach_() + zero_() on every .grad)
      flat_step(a, flat, r, accumulate);
      oa.step();
      ob.zero_grad();
      reducer_step(b, red, r, accumulate);
      ob.step();
    }
    flat_sums[r] = parallel::parameter_checksum(*a);
    red_sums[r] = parallel::parameter_checksum(*b);
  });
  ASSERT_TRUE(all_ranks_ok(errors));
  EXPECT_NE(flat_sums[0], start[0]) << "training must change the parameters";
  for (int r = 0; r < n; ++r) {
    EXPECT_EQ(red_sums[r], flat_sums[r]) << "rank " << r;
    EXPECT_EQ(red_sums[r], red_sums[0]) << "replicas diverged";
  }
}

// [Graphed step] A backward whose hooks stay silent (as while a CUDA graph is captured; its replays
// run no autograd at all), then mark_all_ready(): the same averaged gradients, bit for bit, as the
// flat all-reduce, every step after zero_grads() (one fill per bucket, the .grad aliases kept).
TEST(Reducer, HooklessBackwardThenMarkAllReadyEqualsFlat) {
  torch::set_num_threads(1);
  for (int world : {1, 2, 4}) {
    SCOPED_TRACE("world " + std::to_string(world));
    auto flat_group = comm::make_thread_group(world);
    auto red_group = comm::make_thread_group(world);
    auto as = make_models(world, 7), bs = make_models(world, 7);
    const auto errors = run_ranks(world, [&](int r) {
      auto a = as[r], b = bs[r];
      parallel::FlatGradientAllreduce flat(*a, *flat_group[r], kTimeout);
      parallel::Reducer red(*b, *red_group[r], options(0.05, 0.01));
      EXPECT_THROW(red.mark_all_ready(), Error) << "mark_all_ready() needs prepare_for_backward(true)";
      const auto first = b->parameters()[0];
      for (int step = 0; step < 3; ++step) {
        flat_step(a, flat, r, 1);
        const void* alias = first.grad().data_ptr();
        red.zero_grads();
        for (const auto& p : b->parameters()) ASSERT_EQ(p.grad().count_nonzero().item<int64_t>(), 0);
        ASSERT_EQ(first.grad().data_ptr(), alias) << "zero_grads() must keep the bucket alias";
        auto [x, y] = batch(r, 0, 3);
        auto loss = torch::nn::functional::cross_entropy(b->forward(x), y);
        red.prepare_for_backward(false);  // the hooks do nothing
        loss.backward();
        red.prepare_for_backward(true);
        red.mark_all_ready();
        red.finalize();
        auto pa = a->named_parameters(), pb = b->named_parameters();
        for (size_t i = 0; i < pa.size(); ++i)
          ASSERT_TRUE(torch::equal(pa[i].value().grad(), pb[i].value().grad()))
              << "rank " << r << " step " << step << " " << pa[i].key();
      }
    });
    ASSERT_TRUE(all_ranks_ok(errors));
  }
}

TEST(BucketPlan, ReverseRegistrationOrderAndCaps) {
  auto m = make_model(1);
  const auto params = m->parameters();
  const size_t n = params.size();
  auto check_cover = [&](const std::vector<std::vector<size_t>>& plan) {
    std::vector<size_t> order;
    for (const auto& b : plan) order.insert(order.end(), b.begin(), b.end());
    ASSERT_EQ(order.size(), n);
    for (size_t k = 0; k < n; ++k) EXPECT_EQ(order[k], n - 1 - k) << "position " << k;
  };
  auto tiny = parallel::plan_buckets(params, 1e-9, 1e-9);
  check_cover(tiny);
  EXPECT_EQ(tiny.size(), n);
  auto per_param = parallel::plan_buckets(params, 0, 1);
  check_cover(per_param);
  EXPECT_EQ(per_param.size(), n);
  auto whole = parallel::plan_buckets(params, 100, 100);
  check_cover(whole);
  EXPECT_EQ(whole.size(), 1u);
  // 0.05 MiB caps: every bucket but the last reaches its cap, and would not without its last param.
  const double cap = 0.05 * 1024 * 1024, first_cap = 0.01 * 1024 * 1024;
  auto mid = parallel::plan_buckets(params, 0.05, 0.01);
  check_cover(mid);
  EXPECT_GT(mid.size(), 3u);
  for (size_t b = 0; b + 1 < mid.size(); ++b) {
    double bytes = 0;
    for (size_t i : mid[b]) bytes += params[i].numel() * 4.0;
    const double c = b == 0 ? first_cap : cap;
    EXPECT_GE(bytes, c) << "bucket " << b;
    EXPECT_LT(bytes - params[mid[b].back()].numel() * 4.0, c) << "bucket " << b << " overfull";
  }
}

TEST(Reducer, BucketAssignmentIdenticalAcrossRanks) {
  const int n = 3;
  auto group = comm::make_thread_group(n);
  std::vector<std::vector<std::vector<std::string>>> names(n);
  std::vector<model::ResNeXt> models;
  for (int r = 0; r < n; ++r) models.push_back(make_model(100 + r));  // different values, same shapes
  const auto errors = run_ranks(n, [&](int r) {
    auto m = models[r];
    parallel::Reducer red(*m, *group[r], options(0.05, 0.01));
    names[r] = red.bucket_names();
  });
  ASSERT_TRUE(all_ranks_ok(errors));
  ASSERT_GT(names[0].size(), 3u);
  EXPECT_EQ(names[0].front().front(), "fc.bias") << "the head's last parameter comes first";
  for (int r = 1; r < n; ++r) EXPECT_EQ(names[r], names[0]) << "rank " << r;
}

namespace {
// A model with a parameter that never reaches the loss.
struct WithUnusedImpl : torch::nn::Module {
  WithUnusedImpl() {
    used = register_module("used", torch::nn::Linear(4, 3));
    unused = register_module("unused", torch::nn::Linear(4, 3));
    head = register_module("head", torch::nn::Linear(3, 2));
  }
  torch::Tensor forward(const torch::Tensor& x) { return head(used(x)); }
  torch::nn::Linear used{nullptr}, unused{nullptr}, head{nullptr};
};
TORCH_MODULE(WithUnused);
}  // namespace

TEST(Reducer, UnusedParameterIsAnErrorNamingIt) {
  for (double mb : {0.0, 25.0}) {
    const int n = 2;
    auto group = comm::make_thread_group(n);
    std::vector<std::string> messages(n);
    std::vector<WithUnused> models(n);
    const auto errors = run_ranks(n, [&](int r) {
      auto m = models[r];
      parallel::Reducer red(*m, *group[r], options(mb, mb));
      red.prepare_for_backward(true);
      m->forward(torch::ones({5, 4})).sum().backward();
      try {
        red.finalize();
      } catch (const Error& e) {
        messages[r] = e.what();
      }
    });
    ASSERT_TRUE(all_ranks_ok(errors));
    for (int r = 0; r < n; ++r) {
      EXPECT_NE(messages[r].find("unused.weight"), std::string::npos)
          << "bucket_mb " << mb << ": " << messages[r];
      EXPECT_NE(messages[r].find("unused.bias"), std::string::npos) << messages[r];
      EXPECT_EQ(messages[r].find(" used."), std::string::npos) << "names a used parameter: " << messages[r];
      EXPECT_EQ(messages[r].find("head."), std::string::npos) << "names a used parameter: " << messages[r];
    }
  }
}

namespace {
// Only its capabilities matter: the reducer must refuse compression to a wire type the backend does
// not all-reduce, at construction (the mpi backend states fp32/fp64/int32/int64 only).
class StatedBackend : public comm::Communicator {
 public:
  explicit StatedBackend(std::vector<c10::ScalarType> dtypes) : dtypes_(std::move(dtypes)) {}
  std::string backend_name() const override { return "stated"; }
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  comm::Capabilities capabilities() const override {
    comm::Capabilities c;
    c.allreduce_dtypes = dtypes_;
    c.reduce_ops = {comm::ReduceOp::kSum};
    return c;
  }

 private:
  std::vector<c10::ScalarType> dtypes_;
};
}  // namespace

TEST(Reducer, CompressionOverMpiIsAConfigError) {
  auto m = make_model(1);
  StatedBackend fake({c10::kFloat, c10::kDouble, c10::kLong, c10::kInt});  // what mpi states
  auto o = options(25, 1);
  o.compression = parallel::Compression::kFp16;
  try {
    parallel::Reducer red(*m, fake, o);
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.field(), "distributed.compression");
    EXPECT_NE(std::string(e.what()).find("the stated backend reduces only Float, Double, Long, Int"),
              std::string::npos)
        << e.what();
  }
  o.compression = parallel::Compression::kNone;
  EXPECT_NO_THROW(parallel::Reducer(*m, fake, o));
  // Asked per wire type: a backend that reduces bfloat16 but not float16 takes only bf16.
  StatedBackend bf16_only({c10::kFloat, c10::kBFloat16});
  o.compression = parallel::Compression::kBf16;
  EXPECT_NO_THROW(parallel::Reducer(*m, bf16_only, o));
  o.compression = parallel::Compression::kFp16;
  EXPECT_THROW(parallel::Reducer(*m, bf16_only, o), ConfigError);
  EXPECT_THROW(parallel::parse_compression("fp8"), ConfigError);
}

// fp16/bf16 over a backend that reduces them (thread): close to the fp32 result, not equal.
TEST(Reducer, CompressedGradientsAreCloseToFlat) {
  torch::set_num_threads(1);
  for (auto comp : {parallel::Compression::kFp16, parallel::Compression::kBf16}) {
    const int n = 2;
    auto flat_group = comm::make_thread_group(n);
    auto red_group = comm::make_thread_group(n);
    std::vector<double> rel(n);
    auto as = make_models(n, 7), bs = make_models(n, 7);
    const auto errors = run_ranks(n, [&](int r) {
      auto a = as[r], b = bs[r];
      parallel::FlatGradientAllreduce flat(*a, *flat_group[r], kTimeout);
      auto o = options(0.05, 0.01);
      o.compression = comp;
      parallel::Reducer red(*b, *red_group[r], o);
      flat_step(a, flat, r, 1);
      reducer_step(b, red, r, 1);
      double worst = 0;
      for (size_t i = 0; i < a->parameters().size(); ++i) {
        auto ga = a->parameters()[i].grad(), gb = b->parameters()[i].grad();
        worst = std::max(worst, ((ga - gb).norm() / ga.norm().clamp_min(1e-12)).item<double>());
      }
      rel[r] = worst;
    });
    ASSERT_TRUE(all_ranks_ok(errors));
    const double tol = comp == parallel::Compression::kFp16 ? 5e-3 : 3e-2;
    for (int r = 0; r < n; ++r) {
      EXPECT_LT(rel[r], tol) << parallel::compression_name(comp) << " rank " << r;
      EXPECT_GT(rel[r], 0) << "compression had no effect";
    }
  }
}

// [Average first] Gradients that fit fp16 on each rank (40,000 at most here, as loss-scaled fp16
// training has them) must not overflow in the all-reduce: their sum over 2 ranks, 80,000, would pass
// fp16's 65,504. Every rank trains on the same batch, so the average is each rank's own gradient.
TEST(Reducer, Fp16CompressionAveragesBeforeTheSum) {
  torch::set_num_threads(1);
  const int n = 2;
  auto ref = make_model(7);
  zero_grads(*ref);
  const auto xy = batch(0, 0, 3);
  const auto x = xy.first, y = xy.second;
  torch::nn::functional::cross_entropy(ref->forward(x), y).backward();
  double top = 0;
  for (const auto& p : ref->parameters()) top = std::max(top, p.grad().abs().max().item<double>());
  const double scale = 40000 / top;
  auto group = comm::make_thread_group(n);
  auto models = make_models(n, 7);
  std::vector<double> rel(n, -1);
  const auto errors = run_ranks(n, [&](int r) {
    auto m = models[r];
    auto o = options(0.05, 0.01);
    o.compression = parallel::Compression::kFp16;
    parallel::Reducer red(*m, *group[r], o);
    zero_grads(*m);
    red.prepare_for_backward(true);
    (torch::nn::functional::cross_entropy(m->forward(x), y) * scale).backward();
    red.finalize();
    double worst = 0;
    for (size_t i = 0; i < m->parameters().size(); ++i) {
      const auto want = ref->parameters()[i].grad() * scale, got = m->parameters()[i].grad();
      worst = std::max(worst, ((got - want).norm() / want.norm().clamp_min(1e-12)).item<double>());
    }
    rel[r] = worst;  // NaN (fails below) where a bucket overflowed to inf
  });
  ASSERT_TRUE(all_ranks_ok(errors));
  for (int r = 0; r < n; ++r) EXPECT_LT(rel[r], 5e-3) << "rank " << r;
}

// Rank 1 computes on 10x the batch, so its buckets become ready later; the gathered arrival
// times must name it (the all-reduce itself makes both ranks' step times equal).
TEST(Reducer, StatsNameTheStragglerRank) {
  torch::set_num_threads(1);
  const int n = 2;
  auto group = comm::make_thread_group(n);
  std::vector<nlohmann::json> stats(n);
  auto models = make_models(n, 7);
  const auto errors = run_ranks(n, [&](int r) {
    auto m = models[r];
    parallel::Reducer red(*m, *group[r], options(0.05, 0.01));
    for (int step = 0; step < 4; ++step) reducer_step(m, red, r, 1, r == 1 ? 40 : 4);
    red.gather_arrivals();
    stats[r] = red.stats_json();
  });
  ASSERT_TRUE(all_ranks_ok(errors));
  for (int r = 0; r < n; ++r) {
    const auto& s = stats[r];
    EXPECT_EQ(s["steps"], 4);
    EXPECT_GT(s["buckets"]["count"].get<int>(), 3);
    EXPECT_EQ(s["per_bucket"].size(), s["buckets"]["count"].get<size_t>());
    // The step's exposed time covers every bucket's wait (plus the averaging after it).
    double bucket_waits = 0;
    for (const auto& b : s["per_bucket"]) bucket_waits += b["mean_exposed_ms"].get<double>();
    EXPECT_GE(s["mean_exposed_ms"].get<double>(), bucket_waits * (1 - 1e-9)) << s.dump();
    EXPECT_EQ(s["straggler"]["steps_measured"], 3) << "the first step has no reference point";
    EXPECT_EQ(s["straggler"]["rank"], 1) << s.dump();
    EXPECT_GT(s["straggler"]["mean_lag_ms"].get<double>(), 0.0);
  }
  EXPECT_EQ(stats[0]["straggler"], stats[1]["straggler"]) << "every rank computes the same verdict";
  // Rank 0 finishes its backward first and waits for the straggler's buckets: its communication is
  // exposed, rank 1's (whose peers are already there) hardly at all.
  EXPECT_GT(stats[0]["mean_exposed_ms"].get<double>(), stats[1]["mean_exposed_ms"].get<double>())
      << stats[0].dump() << "\n"
      << stats[1].dump();
}
