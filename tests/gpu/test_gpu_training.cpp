// One process, one GPU: the model's training step on CUDA against the same step on the CPU, a
// checkpoint written from the GPU resumed on the GPU and on the CPU, the training step replayed
// from CUDA graphs against the eager step, and the augmentation on the GPU against the loader's.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <iostream>

#include "common/comm/staging.h"
#include "common/comm/thread/thread_communicator.h"
#include "common/data/device_augment.h"
#include "common/data/loader.h"
#include "common/model/precision.h"
#include "common/model/resnext.h"
#include "common/parallel/reducer.h"
#include "common/util/error.h"
#include "tests/data/data_test_util.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/support/temp_dir.h"
#include "worker/checkpoint.h"
#include "worker/step_graph.h"

using namespace rx;

namespace {

model::ResNeXt make_model(torch::Device device, bool fused_bn_relu = false) {
  torch::manual_seed(11);
  auto spec = model::preset("resnext11_4x16d");
  spec.fused_bn_relu = fused_bn_relu;
  model::ResNeXt m(spec);
  m->to(device);
  return m;
}

torch::optim::SGD make_sgd(model::ResNeXt& m) {
  return torch::optim::SGD(m->parameters(),
                           torch::optim::SGDOptions(0.1).momentum(0.9).nesterov(true).weight_decay(5e-4));
}

// Largest |a - b| relative to the largest |b| (so the bound does not depend on a tensor's scale).
double rel_diff(const torch::Tensor& a, const torch::Tensor& b) {
  const auto x = a.detach().to(torch::kCPU, torch::kDouble), y = b.detach().to(torch::kCPU, torch::kDouble);
  return (x - y).abs().max().item<double>() / std::max(y.abs().max().item<double>(), 1e-12);
}

// ||a - b|| / ||b|| over a list of tensors taken together (CPU, double).
double rel_l2(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const auto x = a[i].detach().to(torch::kCPU, torch::kDouble),
               y = b[i].detach().to(torch::kCPU, torch::kDouble);
    num += (x - y).pow(2).sum().item<double>();
    den += y.pow(2).sum().item<double>();
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

// [Tolerance] fp32 on both devices, TF32 off. The CPU and cuDNN sum convolutions and BN statistics
// in different orders, a few ulps per layer; a per-tensor bound fails on BN biases whose gradient is
// a sum that nearly cancels (measured on an H200: 3% of such a tensor's own largest entry). So the
// bounds are over the whole model: loss within 1e-5 relative, all gradients together and all
// updates of one SGD step (Nesterov, weight decay) together within 1e-3 relative L2 error (measured
// on an H200 with cuDNN 9.19: loss equal, gradients and updates 4.0e-4). The per-tensor worst case
// is printed for the record.
TEST(GpuTraining, CudaStepMatchesCpuStep) {
  RX_REQUIRE_GPUS(1);
  at::globalContext().setAllowTF32CuDNN(false);
  at::globalContext().setAllowTF32CuBLAS(false);
  const torch::Device gpu(torch::kCUDA, 0);
  auto cpu_model = make_model(torch::kCPU);
  auto gpu_model = make_model(gpu);
  cpu_model->train();
  gpu_model->train();  // BN on batch statistics: the harder case
  torch::manual_seed(5);
  auto x = torch::randn({16, 3, 32, 32});
  auto y = torch::randint(0, 10, {16}, torch::kInt64);
  auto cpu_opt = make_sgd(cpu_model), gpu_opt = make_sgd(gpu_model);

  auto cpu_loss = torch::nn::functional::cross_entropy(cpu_model->forward(x), y);
  auto gpu_loss = torch::nn::functional::cross_entropy(gpu_model->forward(x.to(gpu)), y.to(gpu));
  cpu_loss.backward();
  gpu_loss.backward();
  const auto cpu_params = cpu_model->parameters(), gpu_params = gpu_model->parameters();
  ASSERT_EQ(cpu_params.size(), gpu_params.size());
  std::vector<torch::Tensor> cpu_grads, gpu_grads, before;
  double worst = 0;
  for (size_t i = 0; i < cpu_params.size(); ++i) {
    ASSERT_TRUE(gpu_params[i].grad().is_cuda());
    cpu_grads.push_back(cpu_params[i].grad().clone());
    gpu_grads.push_back(gpu_params[i].grad().cpu());
    worst = std::max(worst, rel_diff(gpu_grads.back(), cpu_grads.back()));
    before.push_back(cpu_params[i].detach().clone());
  }
  const double loss_diff = rel_diff(gpu_loss, cpu_loss), grad_diff = rel_l2(gpu_grads, cpu_grads);
  cpu_opt.step();
  gpu_opt.step();
  std::vector<torch::Tensor> cpu_updates, gpu_updates;
  for (size_t i = 0; i < cpu_params.size(); ++i) {
    cpu_updates.push_back(cpu_params[i].detach() - before[i]);
    gpu_updates.push_back(gpu_params[i].detach().cpu() - before[i]);
  }
  const double update_diff = rel_l2(gpu_updates, cpu_updates);
  std::cout << "CUDA vs CPU step: loss " << gpu_loss.item<double>() << " vs " << cpu_loss.item<double>()
            << " (relative " << loss_diff << "), gradients relative L2 " << grad_diff << " (worst tensor "
            << worst << "), updates relative L2 " << update_diff << "\n";
  EXPECT_LT(loss_diff, 1e-5);
  EXPECT_LT(grad_diff, 1e-3);
  EXPECT_LT(update_diff, 1e-3);
  double moved = 0;
  for (const auto& u : cpu_updates) moved = std::max(moved, u.abs().max().item<double>());
  EXPECT_GT(moved, 1e-4) << "the step changed nothing";
}

TEST(GpuTraining, CheckpointFromGpuResumesOnGpuAndCpu) {
  RX_REQUIRE_GPUS(1);
  const torch::Device gpu(torch::kCUDA, 0);
  const rx::testing::TempDir dir;
  auto trained = make_model(gpu);
  auto opt = make_sgd(trained);
  torch::manual_seed(3);
  for (int step = 0; step < 3; ++step) {
    opt.zero_grad();
    torch::nn::functional::cross_entropy(trained->forward(torch::randn({8, 3, 32, 32}).to(gpu)),
                                         torch::randint(0, 10, {8}, torch::kInt64).to(gpu))
        .backward();
    opt.step();
  }
  worker::CheckpointStore store(dir.path(), 2);
  store.save(3, *trained, opt, {{"epoch", 0}, {"epoch_position", 24}});

  for (const torch::Device device : {gpu, torch::Device(torch::kCPU)}) {
    torch::manual_seed(1234);  // a different initialisation, so a load that did nothing fails
    model::ResNeXt fresh(model::preset("resnext11_4x16d"));
    fresh->to(device);
    auto fresh_opt = make_sgd(fresh);
    auto cursor = worker::CheckpointStore(dir.path(), 2).load_latest(*fresh, fresh_opt);
    ASSERT_TRUE(cursor.has_value()) << device;
    EXPECT_EQ((*cursor)["epoch_position"], 24);
    const auto want = trained->named_parameters();
    const auto got = fresh->named_parameters();
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_EQ(got[i].value().device(), device) << got[i].key() << " was loaded onto another device";
      EXPECT_TRUE(torch::equal(got[i].value().detach().cpu(), want[i].value().detach().cpu()))
          << got[i].key() << " on " << device;
    }
    const auto bufs = fresh->named_buffers();
    const auto want_bufs = trained->named_buffers();
    for (size_t i = 0; i < bufs.size(); ++i)
      EXPECT_TRUE(torch::equal(bufs[i].value().cpu(), want_bufs[i].value().cpu()))
          << bufs[i].key() << " on " << device;
    // The optimizer state (momentum buffers) is restored too: one entry per trained parameter.
    EXPECT_EQ(fresh_opt.state().size(), opt.state().size()) << device;
  }
}

// The graph tests' three batches of 16 CIFAR-shaped images in pinned memory (what the loader hands
// over), after making cuDNN deterministic and not autotuned, so that the graphed and the eager side
// pick the same kernels.
std::vector<std::pair<torch::Tensor, torch::Tensor>> graph_test_batches(int seed,
                                                                        torch::MemoryFormat format) {
  at::globalContext().setBenchmarkCuDNN(false);
  at::globalContext().setDeterministicCuDNN(true);
  torch::manual_seed(seed);
  std::vector<std::pair<torch::Tensor, torch::Tensor>> batches;
  for (int b = 0; b < 3; ++b)
    batches.emplace_back(torch::randn({16, 3, 32, 32}).contiguous(format).pin_memory(),
                         torch::randint(0, 10, {16}, torch::kInt64).pin_memory());
  return batches;
}

// [Graphed step] Forward and backward captured as CUDA graphs, then replayed, give what the eager step
// gives from the same weights and batch: the loss, every gradient and BN's running statistics. Three
// batches: the one the capture saw, then two loaded into the static inputs, with an SGD update of the
// weights in place between them (a replay that ignored its inputs, or that had kept copies of the
// weights, fails). fp32 and bf16 autocast, and bf16 with model.fused_bn_relu (its CUDA kernels must be
// capturable and deterministic), channels-last, as training.cuda_graph runs, with the
// StepGraph (and its stream) in place before the warm-up step, as in the trainer; cuDNN deterministic
// and not autotuned, so both sides pick the same kernels (bound 1e-5 relative; the measured figures
// are printed). Last, a parameter moved after capture is caught by check_fixed, by name.
TEST(GpuTraining, GraphedStepMatchesEagerStep) {
  RX_REQUIRE_GPUS(1);
  const torch::Device gpu(torch::kCUDA, 0);
  const auto batches = graph_test_batches(5, torch::MemoryFormat::ChannelsLast);
  for (const auto& [precision, fused] :
       {std::pair{model::Precision::kFp32, false}, std::pair{model::Precision::kBf16, false},
        std::pair{model::Precision::kBf16, true}}) {
    SCOPED_TRACE(std::string(model::precision_name(precision)) + (fused ? " fused BN-ReLU" : ""));
    auto graphed = make_model(gpu, fused), eager = make_model(gpu, fused);
    worker::StepGraph graph(gpu);
    auto step = [&](model::ResNeXt& m, const torch::Tensor& x, const torch::Tensor& y) {
      torch::Tensor logits;
      {
        model::AutocastScope autocast(precision, gpu);
        logits = m->forward(x);
      }
      logits = logits.to(torch::kFloat);
      return worker::StepGraph::Outputs{torch::nn::functional::cross_entropy(logits, y), logits};
    };
    // In place, as Reducer::zero_grads(): the graphs keep the gradients' addresses.
    auto zero_grads = [](model::ResNeXt& m) {
      torch::NoGradGuard no_grad;
      for (auto& p : m->parameters())
        if (p.grad().defined())
          p.mutable_grad().zero_();
        else
          p.mutable_grad() = torch::zeros_like(p);
    };
    auto fixed = [](model::ResNeXt& m) {
      worker::FixedAddresses out;
      for (const auto& p : m->named_parameters()) out.add_parameter(p.key(), p.value());
      for (const auto& b : m->named_buffers()) out.add_buffer(b.key(), b.value());
      return out;
    };
    for (auto* m : {&graphed, &eager}) {
      model::to_channels_last(**m);
      (*m)->train();
      step(*m, batches[0].first.to(gpu), batches[0].second.to(gpu)).loss.backward();  // the warm-up step
    }
    zero_grads(graphed);
    graph.capture(
        batches[0].first, batches[0].second,
        [&](const torch::Tensor& x, const torch::Tensor& y) { return step(graphed, x, y); },
        [](const torch::Tensor& loss) { loss.backward(); }, fixed(graphed));
    ASSERT_TRUE(graph.captured());
    EXPECT_FALSE(graph.fits(batches[0].first.narrow(0, 0, 8), batches[0].second.narrow(0, 0, 8)));
    for (size_t b = 0; b < batches.size(); ++b) {
      if (b > 0) graph.load(batches[b].first, batches[b].second);
      zero_grads(graphed);
      graph.replay_forward();
      graph.replay_backward();
      zero_grads(eager);
      auto out = step(eager, batches[b].first.to(gpu), batches[b].second.to(gpu));
      out.loss.backward();
      const auto pg = graphed->parameters(), pe = eager->parameters();
      std::vector<torch::Tensor> got, want;
      for (const auto& p : pg) got.push_back(p.grad());
      for (const auto& p : pe) want.push_back(p.grad());
      std::vector<torch::Tensor> got_bufs, want_bufs;
      for (const auto& t : graphed->buffers()) got_bufs.push_back(t.to(torch::kDouble));
      for (const auto& t : eager->buffers()) want_bufs.push_back(t.to(torch::kDouble));
      const double loss = rel_diff(graph.outputs().loss, out.loss), grads = rel_l2(got, want),
                   stats = rel_l2(got_bufs, want_bufs);
      std::cout << model::precision_name(precision) << (fused ? " fused BN-ReLU" : "") << " batch " << b
                << ": loss " << loss << ", gradients " << grads << ", BN statistics " << stats
                << " (relative)\n";
      EXPECT_LT(loss, 1e-5) << "batch " << b;
      EXPECT_LT(grads, 1e-5) << "batch " << b;
      EXPECT_LT(stats, 1e-5) << "batch " << b;
      EXPECT_GT(want[0].abs().max().item<double>(), 0) << "the eager step computed no gradient";
      torch::NoGradGuard no_grad;  // the same update on both sides (the eager gradients): equal weights
      for (size_t i = 0; i < pg.size(); ++i) {
        pg[i].add_(pe[i].grad(), -0.1);
        pe[i].add_(pe[i].grad(), -0.1);
      }
    }
    EXPECT_NO_THROW(graph.check_fixed());
    auto moved = graphed->named_parameters()[3];
    moved.value().set_data(moved.value().detach().clone());
    try {
      graph.check_fixed();
      ADD_FAILURE() << "a parameter moved after capture was not caught";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(moved.key()), std::string::npos) << e.what();
    }
  }
}

// A world of two seen from one process: each all-reduce first doubles its tensor (the sum with a second,
// identical rank), and the reducer then divides by the world size. A bucket reduced exactly once holds
// its own gradient again; one skipped holds half of it, one reduced twice double.
class TwinWorld : public comm::Communicator {
 public:
  explicit TwinWorld(std::unique_ptr<comm::Communicator> inner) : inner_(std::move(inner)) {}
  std::string backend_name() const override { return "twin " + inner_->backend_name(); }
  comm::Capabilities capabilities() const override { return inner_->capabilities(); }
  int rank() const override { return 0; }
  int world_size() const override { return 2; }
  std::shared_ptr<comm::Work> allreduce(torch::Tensor& tensor, const comm::AllreduceOptions& opts) override {
    {
      torch::NoGradGuard no_grad;
      tensor.mul_(2);
    }
    return inner_->allreduce(tensor, opts);
  }
  void barrier(comm::Millis timeout) override { inner_->barrier(timeout); }

 private:
  std::unique_ptr<comm::Communicator> inner_;
};

// [Graphed step] as the trainer runs it, through the Reducer: gradients alias the bucket buffers,
// Reducer::zero_grads() clears them outside the graphs, the hooks stay silent while backward is
// captured and do not run in a replay, so mark_all_ready() launches the all-reduces and finalize()
// orders the stream after them. The thread backend staged through host memory, seen as a world of two
// (TwinWorld), so a bucket the graphed step left out or reduced twice changes its gradients. Against
// an eager model with its own Reducer, over three batches with the same SGD update in between; bound
// 1e-5 relative, as GraphedStepMatchesEagerStep.
TEST(GpuTraining, GraphedStepThroughTheReducer) {
  RX_REQUIRE_GPUS(1);
  const torch::Device gpu(torch::kCUDA, 0);
  const auto batches = graph_test_batches(6, torch::MemoryFormat::Contiguous);
  auto graphed = make_model(gpu), eager = make_model(gpu);
  worker::StepGraph graph(gpu);  // first, as in the trainer: the reducer's accumulators keep its stream
  auto groups = comm::make_thread_group(1), groups2 = comm::make_thread_group(1);
  TwinWorld comm_g(comm::stage_through(std::move(groups[0]), torch::kCPU));
  TwinWorld comm_e(comm::stage_through(std::move(groups2[0]), torch::kCPU));
  parallel::ReducerOptions ro;
  ro.bucket_mb = 0.5;  // several buckets
  ro.timeout = comm::Millis(60000);
  parallel::Reducer red_g(*graphed, comm_g, ro), red_e(*eager, comm_e, ro);
  auto forward = [](model::ResNeXt& m, const torch::Tensor& x, const torch::Tensor& y) {
    auto logits = m->forward(x);
    return worker::StepGraph::Outputs{torch::nn::functional::cross_entropy(logits, y), logits};
  };
  auto eager_step = [&](model::ResNeXt& m, parallel::Reducer& red, size_t b) {
    red.zero_grads();
    red.prepare_for_backward(true);
    forward(m, batches[b].first.to(gpu), batches[b].second.to(gpu)).loss.backward();
    red.finalize();
  };
  graphed->train();
  eager->train();
  eager_step(graphed, red_g, 0);  // the warm-up step
  eager_step(eager, red_e, 0);
  red_g.zero_grads();
  red_g.prepare_for_backward(false);
  worker::FixedAddresses fixed;
  for (const auto& p : graphed->named_parameters()) fixed.add_parameter(p.key(), p.value());
  graph.capture(
      batches[0].first, batches[0].second,
      [&](const torch::Tensor& x, const torch::Tensor& y) { return forward(graphed, x, y); },
      [](const torch::Tensor& loss) { loss.backward(); }, std::move(fixed));
  for (size_t b = 0; b < batches.size(); ++b) {
    red_g.zero_grads();
    graph.check_fixed();
    graph.load(batches[b].first, batches[b].second);
    graph.replay_forward();
    red_g.prepare_for_backward(true);
    graph.replay_backward();
    red_g.mark_all_ready();
    red_g.finalize();
    eager_step(eager, red_e, b);
    const auto pg = graphed->parameters(), pe = eager->parameters();
    std::vector<torch::Tensor> got, want;
    for (const auto& p : pg) got.push_back(p.grad());
    for (const auto& p : pe) want.push_back(p.grad());
    const double grads = rel_l2(got, want);
    std::cout << "through the reducer, batch " << b << ": gradients " << grads << " (relative)\n";
    EXPECT_LT(grads, 1e-5) << "batch " << b;
    EXPECT_GT(want[0].abs().max().item<double>(), 0) << "the eager step computed no gradient";
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < pg.size(); ++i) {
      pg[i].add_(pe[i].grad(), -0.1);
      pe[i].add_(pe[i].grad(), -0.1);
    }
  }
}

// [Device augment] on the GPU: the 224x224 fine-tune's work (crop, flip, bilinear resize 32 -> 224,
// normalise, random erasing), channels-last, from a deferred batch in pinned memory, against the
// loader's own augmentation on the CPU. The operations are the CPU's, one rounding each, so the
// expected difference is 0; the bound allows 1e-6 and the figure is printed.
TEST(GpuData, DeviceAugmentMatchesLoader) {
  RX_REQUIRE_GPUS(1);
  const torch::Device gpu(torch::kCUDA, 0);
  const auto data = data::test_util::random_dataset(64, 3, 32, 32, 10, 9);
  std::vector<int64_t> order(64);
  for (int64_t i = 0; i < 64; ++i) order[static_cast<size_t>(i)] = (i * 37) % 64;
  data::AugmentOptions a;
  a.resize = 224;
  a.erasing = 0.5f;
  data::LoaderOptions o;
  o.batch_size = 32;
  o.num_threads = 0;
  o.channels_last = true;
  o.pin_memory = true;
  o.seed = 4;
  data::Loader host(data, order, a, o);
  o.defer_augment = true;
  data::Loader deferred(data, order, a, o);
  const data::DeviceAugmenter device(deferred.augmenter(), gpu);
  int batches = 0;
  while (auto want = host.next()) {
    auto got = deferred.next();
    ASSERT_TRUE(got.has_value());
    EXPECT_TRUE(got->pixels.is_pinned());
    const auto images = device.images(*got, true);
    EXPECT_TRUE(images.is_cuda());
    EXPECT_EQ(images.strides(), want->images.strides());
    const double diff = (images.cpu() - want->images).abs().max().item<double>();
    std::cout << "batch " << batches << ": max |GPU - loader| " << diff
              << (torch::equal(images.cpu(), want->images) ? " (bitwise equal)" : "") << "\n";
    EXPECT_LE(diff, 1e-6) << "batch " << batches;
    ++batches;
  }
  EXPECT_EQ(batches, 2);
}

}  // namespace
