// [Fused BN-ReLU] (common/model/fused_bn_relu.h) against LibTorch's own BatchNorm2d + add + relu: the
// outputs, running statistics and every gradient, for odd shapes, one and two threads, with and without
// a residual; and the places where the fused path must step aside.
#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <tuple>

#include "common/model/fused_bn_relu.h"
#include "common/model/precision.h"
#include "common/model/resnext.h"

using namespace rx::model;
namespace nn = torch::nn;

namespace {
// Close in the sense of float rounding over a sum of `rows` terms: the fused kernels sum in a different
// order than ATen, so equality is to a few ulps of the largest value, not bit for bit.
void expect_close(const torch::Tensor& got, const torch::Tensor& want, const char* what, double tol = 2e-5) {
  ASSERT_TRUE(got.defined()) << what;
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  const double scale = std::max(1.0, want.abs().max().item<double>());
  const double err = (got - want).abs().max().item<double>();
  EXPECT_LE(err, tol * scale) << what << ": max |fused - unfused| " << err << " (scale " << scale << ")";
}

struct Case {
  int64_t n, c, h, w;
  bool residual;
  int threads;
};

class FusedBnReluTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    previous_threads_ = at::get_num_threads();
    at::set_num_threads(GetParam().threads);
  }
  void TearDown() override { at::set_num_threads(previous_threads_); }
  int previous_threads_ = 1;
};

// Two BatchNorm2d with the same non-trivial affine parameters and running statistics.
std::pair<nn::BatchNorm2d, nn::BatchNorm2d> twin_bns(int64_t c) {
  nn::BatchNorm2d a(c), b(c);
  torch::NoGradGuard no_grad;
  a->weight.copy_(torch::rand({c}) + 0.5);
  a->bias.copy_(torch::randn({c}) * 0.3);
  a->running_mean.copy_(torch::randn({c}));
  a->running_var.copy_(torch::rand({c}) + 0.5);
  for (auto [from, to] : {std::pair{a->weight, b->weight},
                          {a->bias, b->bias},
                          {a->running_mean, b->running_mean},
                          {a->running_var, b->running_var}})
    to.copy_(from);
  return {a, b};
}

// The oracle is the same computation in float64 (LibTorch's BatchNorm2d on doubles). The fused kernels
// must be within a few float ulps of it, and no less accurate than LibTorch's own float path.
TEST_P(FusedBnReluTest, TrainingMatchesAFloat64Reference) {
  const auto p = GetParam();
  torch::manual_seed(3);
  auto [fused_bn, plain_bn] = twin_bns(p.c);
  nn::BatchNorm2d ref_bn(p.c);
  {
    torch::NoGradGuard no_grad;
    for (auto [from, to] : {std::pair{plain_bn->weight, ref_bn->weight},
                            {plain_bn->bias, ref_bn->bias},
                            {plain_bn->running_mean, ref_bn->running_mean},
                            {plain_bn->running_var, ref_bn->running_var}})
      to.copy_(from);
  }
  ref_bn->to(torch::kFloat64);
  // A mean far from zero against its spread, so a naive sum-of-squares variance would lose digits.
  auto x0 = (torch::randn({p.n, p.c, p.h, p.w}) * 0.5 + 4.0).contiguous(torch::MemoryFormat::ChannelsLast);
  auto r0 = torch::randn({p.n, p.c, p.h, p.w}).contiguous(torch::MemoryFormat::ChannelsLast);
  auto dy = torch::randn({p.n, p.c, p.h, p.w});
  {
    // Where the pre-activation is within rounding of zero the two float paths may disagree on the
    // ReLU's mask; no incoming gradient there keeps the comparison about arithmetic, not ties.
    auto xd = x0.to(torch::kFloat64);
    auto mean = xd.mean({0, 2, 3}, true);
    auto var = xd.var({0, 2, 3}, /*unbiased=*/false, true);
    auto w = ref_bn->weight.detach().view({1, -1, 1, 1}), b = ref_bn->bias.detach().view({1, -1, 1, 1});
    auto z = (xd - mean) / (var + 1e-5).sqrt() * w + b +
             (p.residual ? r0.to(torch::kFloat64) : torch::zeros_like(xd));
    dy.masked_fill_(z.abs().lt(1e-3).to(torch::kBool), 0.0);
  }
  struct Out {
    torch::Tensor y, dx, dr, dw, db, rm, rv;
  };
  auto run = [&](nn::BatchNorm2d& bn, bool fused, torch::ScalarType dtype) {
    auto x = x0.to(dtype).clone().requires_grad_(true);
    auto r = r0.to(dtype).clone().requires_grad_(true);
    bn->train();
    bn->zero_grad();
    auto y = bn_relu(x, *bn, p.residual ? r : torch::Tensor(), fused);
    y.backward(dy.to(dtype));
    if (fused) {
      EXPECT_TRUE(y.is_contiguous(torch::MemoryFormat::ChannelsLast));
      EXPECT_TRUE(x.grad().is_contiguous(torch::MemoryFormat::ChannelsLast));
    }
    auto d = [](const torch::Tensor& t) { return t.defined() ? t.detach().to(torch::kFloat64) : t; };
    return Out{d(y),
               d(x.grad()),
               p.residual ? d(r.grad()) : torch::Tensor(),
               d(bn->weight.grad()),
               d(bn->bias.grad()),
               d(bn->running_mean),
               d(bn->running_var)};
  };
  ASSERT_TRUE(fused_bn_relu_applies(x0, *fused_bn, p.residual ? r0 : torch::Tensor()));
  const Out f = run(fused_bn, true, torch::kFloat32);
  const Out u = run(plain_bn, false, torch::kFloat32);
  const Out ref = run(ref_bn, false, torch::kFloat64);
  EXPECT_EQ(fused_bn->num_batches_tracked.item<int64_t>(), 1);
  auto check = [&](const torch::Tensor& got, const torch::Tensor& aten, const torch::Tensor& want,
                   const char* what) {
    const double scale = std::max(1.0, want.abs().max().item<double>());
    const double err = (got - want).abs().max().item<double>();
    const double aten_err = (aten - want).abs().max().item<double>();
    EXPECT_LE(err, std::max(4 * aten_err, 2e-6 * scale))
        << what << ": fused error " << err << ", LibTorch's float error " << aten_err << " (scale " << scale
        << ")";
  };
  check(f.y, u.y, ref.y, "output");
  check(f.dx, u.dx, ref.dx, "grad x");
  check(f.dw, u.dw, ref.dw, "grad weight");
  check(f.db, u.db, ref.db, "grad bias");
  if (p.residual) check(f.dr, u.dr, ref.dr, "grad residual");
  check(f.rm, u.rm, ref.rm, "running_mean");
  check(f.rv, u.rv, ref.rv, "running_var");
}

TEST_P(FusedBnReluTest, EvalMatchesUnfused) {
  const auto p = GetParam();
  torch::manual_seed(4);
  auto [fused_bn, plain_bn] = twin_bns(p.c);
  fused_bn->eval();
  plain_bn->eval();
  auto x = torch::randn({p.n, p.c, p.h, p.w}).contiguous(torch::MemoryFormat::ChannelsLast);
  auto r = p.residual ? torch::randn({p.n, p.c, p.h, p.w}).contiguous(torch::MemoryFormat::ChannelsLast)
                      : torch::Tensor();
  torch::NoGradGuard no_grad;
  ASSERT_TRUE(fused_bn_relu_applies(x, *fused_bn, r));
  expect_close(bn_relu(x, *fused_bn, r, true), bn_relu(x, *plain_bn, r, false), "eval output");
  EXPECT_EQ(fused_bn->num_batches_tracked.item<int64_t>(), 0);  // eval leaves the statistics alone
}

INSTANTIATE_TEST_SUITE_P(Shapes, FusedBnReluTest,
                         ::testing::Values(Case{64, 16, 28, 28, false, 1}, Case{64, 16, 28, 28, true, 1},
                                           Case{7, 3, 5, 9, false, 1}, Case{7, 67, 5, 3, true, 1},
                                           Case{16, 64, 14, 14, false, 2}, Case{16, 64, 14, 14, true, 2},
                                           Case{2, 5, 1, 1, true, 2}),
                         [](const auto& info) {
                           const Case& c = info.param;
                           return "n" + std::to_string(c.n) + "c" + std::to_string(c.c) + "hw" +
                                  std::to_string(c.h * c.w) + (c.residual ? "_residual" : "_plain") + "_t" +
                                  std::to_string(c.threads);
                         });

TEST(FusedBnRelu, StepsAsideWhereItDoesNotApply) {
  torch::manual_seed(5);
  nn::BatchNorm2d bn(8);
  auto nchw = torch::randn({4, 8, 6, 6});
  auto cl = nchw.contiguous(torch::MemoryFormat::ChannelsLast);
  EXPECT_FALSE(fused_bn_relu_applies(nchw, *bn, {}));                    // layout
  EXPECT_FALSE(fused_bn_relu_applies(cl.to(torch::kFloat64), *bn, {}));  // dtype
  EXPECT_FALSE(fused_bn_relu_applies(cl, *bn, nchw));                    // residual layout
  EXPECT_FALSE(fused_bn_relu_applies(torch::randn({4, 1, 6, 6}).contiguous(torch::MemoryFormat::ChannelsLast),
                                     *bn, {}));  // channels != num_features
  auto one_row = torch::randn({1, 8, 1, 1}).contiguous(torch::MemoryFormat::ChannelsLast);
  EXPECT_FALSE(fused_bn_relu_applies(one_row, *bn, {}));  // one value per channel: LibTorch's error
  EXPECT_THROW(bn_relu(one_row, *bn, {}, true), c10::Error);
  EXPECT_FALSE(fused_bn_relu_applies(cl, *nn::BatchNorm2d(nn::BatchNorm2dOptions(8).affine(false)), {}));
  EXPECT_FALSE(fused_bn_relu_applies(
      cl, *nn::BatchNorm2d(nn::BatchNorm2dOptions(8).momentum(c10::optional<double>())), {}));
  bn->eval();
  EXPECT_FALSE(fused_bn_relu_applies(cl, *bn, {}));  // eval with gradients wanted: no fused backward
  {
    torch::NoGradGuard no_grad;
    EXPECT_TRUE(fused_bn_relu_applies(cl, *bn, {}));
  }
  {
    // A double backward is refused, not answered with zeros.
    nn::BatchNorm2d twin(8);
    auto xg = cl.clone().requires_grad_(true);
    auto y = bn_relu(xg, *twin, {}, true);
    EXPECT_THROW(
        torch::autograd::grad({(y * y).sum()}, {xg}, {}, /*retain_graph=*/true, /*create_graph=*/true),
        c10::Error);
    EXPECT_NO_THROW(torch::autograd::grad({(y * y).sum()}, {xg}));  // a first-order gradient is fine
  }
  // Where it steps aside the result is LibTorch's own, bit for bit.
  bn->train();
  nn::BatchNorm2d twin(8);
  auto a = bn_relu(nchw, *bn, {}, true);
  auto b = torch::relu(twin->forward(nchw));
  EXPECT_TRUE(torch::equal(a, b));
}

// The whole network: the switch changes no parameter and no initial value, and training with and
// without it follows the same losses. Not compared gradient by gradient: where a pre-activation is
// within rounding of zero, the two paths may take different sides of the ReLU, and one such element
// moves a channel's bias gradient by its whole incoming gradient (the per-layer tests above rule those
// ties out and compare to float64). Only three steps, within 0.1%: small-batch SGD at this learning rate
// is chaotic (nudging every weight by a relative 1e-7 moves the fifth step's loss by 0.3%).
TEST(FusedBnRelu, ResNeXtTrainsTheSameWithAndWithoutIt) {
  auto build = [](bool fused) {
    torch::manual_seed(9);
    auto spec = preset("resnext20_tiny");
    spec.in_channels = 1;
    spec.fused_bn_relu = fused;
    ResNeXt m(spec);
    to_channels_last(*m);
    return m;
  };
  auto fused = build(true), plain = build(false);
  // The fusion must actually engage: the stem's conv output is what its first bn_relu sees.
  {
    torch::NoGradGuard no_grad;
    auto probe =
        torch::empty({2, 1, 28, 28}, torch::TensorOptions().memory_format(torch::MemoryFormat::ChannelsLast));
    probe.normal_();
    auto modules = fused->named_modules();
    auto stem_out = modules["conv1"]->as<nn::Conv2d>()->forward(probe);
    fused->train();
    ASSERT_TRUE(fused_bn_relu_applies(stem_out, *modules["bn1"]->as<nn::BatchNorm2d>(), {}));
  }
  auto pf = fused->named_parameters(), pu = plain->named_parameters();
  ASSERT_EQ(pf.size(), pu.size());
  for (const auto& item : pf) EXPECT_TRUE(torch::equal(item.value(), pu[item.key()])) << item.key();

  torch::manual_seed(10);
  // As the loader builds batches: channels-last strides even for one channel (.contiguous() would keep
  // NCHW strides there, and the convolutions would then run, and return, NCHW).
  auto x =
      torch::empty({32, 1, 28, 28}, torch::TensorOptions().memory_format(torch::MemoryFormat::ChannelsLast));
  x.copy_(torch::randn({32, 1, 28, 28}));
  auto y = torch::randint(0, 10, {32}, torch::kInt64);
  torch::optim::SGD of(fused->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
  torch::optim::SGD ou(plain->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
  for (int step = 0; step < 3; ++step) {
    double loss[2];
    int i = 0;
    for (auto [m, opt] : {std::pair{&fused, &of}, {&plain, &ou}}) {
      opt->zero_grad();
      auto l = torch::nn::functional::cross_entropy((*m)->forward(x), y);
      l.backward();
      opt->step();
      loss[i++] = l.item<double>();
    }
    EXPECT_NEAR(loss[0], loss[1], 1e-3 * loss[1]) << "step " << step;
  }
  fused->eval();
  plain->eval();
  torch::NoGradGuard no_grad;
  expect_close(fused->forward(x), plain->forward(x), "eval logits after 3 steps", 1e-2);
}
}  // namespace
