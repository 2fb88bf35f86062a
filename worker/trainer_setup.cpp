// Building a rank's trainer: its data (shared files or coordinator-served blocks), the model and its
// numerics, the optimizer, the checkpoint resume and, last, the gradient sync. Split from
// trainer.cpp so that the training loop reads in one sitting.
#include <spdlog/spdlog.h>

#include "common/config/job_config.h"
#include "common/data/loader.h"
#include "common/data/shard_plan.h"
#include "common/model/precision.h"
#include "common/model/state_dict.h"
#include "common/optim/fused_adam.h"
#include "common/optim/fused_sgd.h"
#include "common/parallel/replica_sync.h"
#include "common/util/error.h"
#include "worker/trainer.h"
#include "worker/trainer_detail.h"

namespace rx::worker {

using json = nlohmann::json;

namespace detail {

data::AugmentOptions augment_options(const config::DataSpec& d, bool train) {
  const auto& a = d.augment;
  data::AugmentOptions o;
  o.crop_padding = a.crop_padding;
  o.flip = a.flip;
  o.mean.assign(a.mean.begin(), a.mean.end());
  o.std.assign(a.std.begin(), a.std.end());
  o.resize = a.resize;
  o.pad_to = a.pad_to;
  o.replicate_channels = a.replicate_channels;
  o.erasing = static_cast<float>(a.erasing);
  o.erasing_scale = {static_cast<float>(a.erasing_scale[0]), static_cast<float>(a.erasing_scale[1])};
  o.erasing_ratio = {static_cast<float>(a.erasing_ratio[0]), static_cast<float>(a.erasing_ratio[1])};
  o.train = train;
  return o;
}

}  // namespace detail

namespace {
using detail::augment_options;

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const config::OptimizerSpec& o,
                                                        std::vector<torch::Tensor> params) {
  const double lr = o.lr, wd = o.weight_decay;
  const auto betas = std::make_tuple(o.betas[0], o.betas[1]);
  switch (o.name) {
    case config::OptimizerKind::kSgd: {
      const auto opts =
          torch::optim::SGDOptions(lr).momentum(o.momentum).nesterov(o.nesterov).weight_decay(wd);
      if (o.fused) return std::make_unique<optim::FusedSGD>(params, opts);  // [Fused step]
      return std::make_unique<torch::optim::SGD>(params, opts);
    }
    case config::OptimizerKind::kAdam: {
      const auto opts = torch::optim::AdamOptions(lr).betas(betas).eps(o.eps).weight_decay(wd);
      if (o.fused) return std::make_unique<optim::FusedAdam>(params, opts);  // [Fused Adam]
      return std::make_unique<torch::optim::Adam>(params, opts);
    }
    case config::OptimizerKind::kAdamW:
      break;
  }
  const auto opts = torch::optim::AdamWOptions(lr).betas(betas).eps(o.eps).weight_decay(wd);
  if (o.fused) return std::make_unique<optim::FusedAdamW>(params, opts);
  return std::make_unique<torch::optim::AdamW>(params, opts);
}
}  // namespace

Trainer::Trainer(config::JobSpec job, comm::Communicator& comm, torch::Device device, TrainerHooks hooks)
    : spec_(std::move(job)), comm_(comm), device_(device), hooks_(std::move(hooks)) {
  const auto& d = spec_.data;
  const auto& t = spec_.training;
  local_shards_ = d.source == config::DataSource::kCoordinator;
  if (local_shards_) {
    train_data_ = fetch_local_block(data::Split::kTrain);
    test_data_ = fetch_local_block(data::Split::kTest);
  } else {
    train_data_ = data::load_dataset(d.format, d.path, data::Split::kTrain).take_first(d.max_train_samples);
    test_data_ = data::load_dataset(d.format, d.path, data::Split::kTest).take_first(d.max_test_samples);
  }
  {  // sizes over all ranks: the longest local block (local mode) and the test total
    auto sizes = torch::tensor({train_data_.count, test_data_.count}, torch::kInt64);
    auto all = torch::empty({2 * comm_.world_size()}, torch::kInt64);
    comm_.allgather(sizes, all, {timeout()})->wait(timeout());
    train_total_ = local_shards_ ? all.view({-1, 2}).select(1, 0).sum().item<int64_t>() : train_data_.count;
    test_total_ = local_shards_ ? all.view({-1, 2}).select(1, 1).sum().item<int64_t>() : test_data_.count;
    local_shard_len_ = all.view({-1, 2}).select(1, 0).max().item<int64_t>();
  }
  auto spec = config::model_spec(spec_);
  if (train_data_.num_classes > spec.num_classes)
    throw ConfigError("model.num_classes", std::to_string(spec.num_classes) +
                                               " is fewer than the dataset's " +
                                               std::to_string(train_data_.num_classes) + " classes");
  const auto shape = data::output_shape(train_data_, augment_options(d, true));
  if (shape[0] != spec.in_channels)
    throw ConfigError("data.augment.replicate_channels",
                      "the model expects " + std::to_string(spec.in_channels) +
                          " input channels, the data gives " + std::to_string(shape[0]));

  torch::manual_seed(t.seed);
  model_ = model::ResNeXt(spec);
  const std::string& pretrained = spec_.model.pretrained;
  if (!pretrained.empty() && comm_.rank() == 0) {
    model::LoadOptions lo;
    lo.skip_head = spec_.model.replace_head;
    model::load_state_dict(*model_, model::read_state_dict(pretrained), lo, pretrained);
  }
  model_->to(device_);
  if (device_.is_cuda()) timer_.set_device_clock(metrics::make_cuda_clock(device_.index()));
  // [Mixed precision] in common/model/precision.h; channels-last covers the input batches (the
  // loader) and the 4-D weights, converted before the broadcast so every rank holds the same layout.
  precision_ = model::parse_precision(t.precision);
  model::check_precision_supported(precision_, device_);
  scaler_ = std::make_unique<model::LossScaler>(precision_ == model::Precision::kFp16);
  if (t.cuda_graph) {  // [Graphed step] in worker/step_graph.h
    if (precision_ == model::Precision::kFp16)
      throw ConfigError("training.cuda_graph",
                        "cannot run with training.precision fp16: its loss scaler "
                        "checks the gradients on the host every step (use bf16)");
    if (t.accumulate_steps != 1)
      throw ConfigError("training.cuda_graph", "needs training.accumulate_steps 1 (it is " +
                                                   std::to_string(t.accumulate_steps) + ")");
    graph_ = std::make_unique<StepGraph>(device_);  // a CUDA device, or a ConfigError
    graph_warmup_left_ = 3;  // cuDNN's autotuning and the fused optimizer's layout settle first
  }
  if (d.channels_last) model::to_channels_last(*model_);
#ifdef RX_WITH_CUDA
  if (device_.is_cuda()) {
    at::globalContext().setBenchmarkCuDNN(t.cudnn_benchmark);
    at::globalContext().setDeterministicCuDNN(t.cudnn_deterministic);
  }
#endif
  // [Identical start] Rank 0's parameters and buffers win, then every rank proves it holds them.
  parallel::broadcast_module_state(*model_, comm_, 0, timeout());
  parallel::verify_replicas(*model_, comm_, "after the initial broadcast", timeout());

  optimizer_ = make_optimizer(t.optimizer, model_->parameters());
  if (t.ema_decay > 0) ema_ = std::make_unique<optim::WeightEma>(*model_, t.ema_decay);

  const auto& ck = spec_.checkpoint;
  // The store is always there (a preemption checkpoints even when no cadence is set); the cadences
  // and resume decide when it is used.
  checkpoints_ = std::make_unique<CheckpointStore>(spec_.output.dir + "/checkpoints", ck.keep);
  checkpointing_ = ck.every_steps > 0 || ck.every_epochs > 0 || ck.resume == config::ResumeMode::kAuto;
  if (ck.resume == config::ResumeMode::kAuto) {
    // Every rank loads the same files (the output folder is shared by the job's ranks), then proves
    // it holds the same parameters as rank 0 and the same cursor.
    auto cursor = checkpoints_->load_latest(*model_, *optimizer_, ema_.get());
    const int64_t step = cursor ? (*cursor)["global_step"].get<int64_t>() : -1;
    auto mine = torch::tensor({step}, torch::kInt64);
    auto all = torch::empty({comm_.world_size()}, torch::kInt64);
    comm_.allgather(mine, all, {timeout()})->wait(timeout());
    for (int r = 0; r < comm_.world_size(); ++r)
      if (all[r].item<int64_t>() != step)
        throw CommError(comm_.backend_name(), comm_.rank(),
                        "rank " + std::to_string(r) + " resumed from step " +
                            std::to_string(all[r].item<int64_t>()) + ", rank " +
                            std::to_string(comm_.rank()) + " from " + std::to_string(step));
    if (cursor) {
      resume_ = *cursor;
      global_step_ = step;
      epoch_records_ = resume_.value("epochs", json::array());
      best_accuracy_ = resume_.value("best_test_accuracy", 0.0);
      scaler_->load_state(resume_.value("loss_scaler", json()));
      parallel::verify_replicas(*model_, comm_, "after loading the checkpoint", timeout());
    }
  }

  // A checkpoint load replaces the parameters' storage (with the layout they were saved in).
  if (d.channels_last) model::to_channels_last(*model_);
  // [Sync after load] The gradient sync is built last: it hooks and views the parameters as they will
  // be trained, and a checkpoint load replaces their storage. It also comes after the StepGraph, which
  // has put this thread on its own stream: autograd's gradient accumulators, which the reducer holds
  // for the whole run, keep the stream that was current when they were made ([Graphed step]).
  grad_sync_.reset(new GradSync(*model_, comm_, spec_.distributed));
  params_ = model_->parameters();
  RX_CHECK(comm_.world_size() == 1 || hooks_.vote_comm,
           "a world of " << comm_.world_size() << " needs TrainerHooks::vote_comm");
  stop_vote_ = std::make_unique<StopVote>(comm_.world_size() > 1 ? hooks_.vote_comm : nullptr, timeout());

  const int64_t shard =
      local_shards_ ? local_shard_len_ : data::shard_length(train_data_.count, comm_.world_size());
  const int64_t batch = t.batch_size * t.accumulate_steps;
  steps_per_epoch_ = (shard + batch - 1) / batch;
  const int64_t cap = t.max_steps_per_epoch;
  if (cap > 0) steps_per_epoch_ = std::min(steps_per_epoch_, cap);
}

Trainer::~Trainer() = default;

data::Dataset Trainer::fetch_local_block(data::Split split) {
  if (!hooks_.fetch_shard)
    throw ConfigError("data.source",
                      "\"coordinator\" needs the coordinator: run under it (--coordinator URL --job-id ID)");
  const std::string name = split == data::Split::kTrain ? "train" : "test";
  // [Shard blocks] Decoded from memory by the same code that encoded them in the coordinator: no
  // temporary files to write, re-read or leave behind.
  const std::string source = "the coordinator's " + name + " block for rank " + std::to_string(comm_.rank());
  const data::Format format = data::parse_format(spec_.data.format);
  if (format == data::Format::kIdx) {
    const std::string images = hooks_.fetch_shard("images", name);  // in this order: images first
    return data::decode_idx(images, hooks_.fetch_shard("labels", name), source);
  }
  return data::decode_cifar_records(hooks_.fetch_shard("", name), format == data::Format::kCifar100, source);
}

}  // namespace rx::worker
