#include "worker/trainer.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>

#include "common/config/job_config.h"
#include "common/data/loader.h"
#include "common/data/shard_plan.h"
#include "common/metrics/memory.h"
#include "common/model/state_dict.h"
#include "common/parallel/replica_sync.h"
#include "common/util/error.h"
#include "worker/lr_schedule.h"
#include "worker/run_record.h"

namespace rx::worker {

using json = nlohmann::json;
using metrics::Phase;

namespace {
double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

data::AugmentOptions augment_options(const json& d, bool train) {
  const auto& a = d.at("augment");
  data::AugmentOptions o;
  o.crop_padding = a.at("crop_padding").get<int>();
  o.flip = a.at("flip").get<bool>();
  o.mean = a.at("mean").get<std::vector<float>>();
  o.std = a.at("std").get<std::vector<float>>();
  o.resize = a.at("resize").get<int>();
  o.pad_to = a.at("pad_to").get<int>();
  o.replicate_channels = a.at("replicate_channels").get<int>();
  o.train = train;
  return o;
}

void set_lr(torch::optim::Optimizer& opt, double lr) {
  for (auto& g : opt.param_groups()) g.options().set_lr(lr);
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const json& o, std::vector<torch::Tensor> params) {
  const std::string name = o.at("name").get<std::string>();
  const double lr = o.at("lr").get<double>(), wd = o.at("weight_decay").get<double>();
  if (name == "sgd")
    return std::make_unique<torch::optim::SGD>(params, torch::optim::SGDOptions(lr)
                                                           .momentum(o.at("momentum").get<double>())
                                                           .nesterov(o.at("nesterov").get<bool>())
                                                           .weight_decay(wd));
  const auto betas = std::make_tuple(o.at("betas")[0].get<double>(), o.at("betas")[1].get<double>());
  const double eps = o.at("eps").get<double>();
  if (name == "adam")
    return std::make_unique<torch::optim::Adam>(params, torch::optim::AdamOptions(lr).betas(betas).eps(eps).weight_decay(wd));
  return std::make_unique<torch::optim::AdamW>(params, torch::optim::AdamWOptions(lr).betas(betas).eps(eps).weight_decay(wd));
}
}  // namespace

struct Trainer::GradSync {
  parallel::FlatGradientAllreduce flat;
};

struct Trainer::EpochStats {
  double loss_sum = 0;
  int64_t correct = 0;
  int64_t count = 0;
};

Trainer::Trainer(json cfg, comm::Communicator& comm, torch::Device device, TrainerHooks hooks)
    : cfg_(std::move(cfg)), comm_(comm), device_(device), hooks_(std::move(hooks)) {
  const auto& d = cfg_.at("data");
  const auto& t = cfg_.at("training");
  if (d.at("source").get<std::string>() != "shared")
    throw ConfigError("data.source", "\"coordinator\" (shards shipped by the coordinator) is not supported by this "
                                     "worker yet; use a dataset path every rank can read");
  const std::string format = d.at("format").get<std::string>(), path = d.at("path").get<std::string>();
  train_data_ = data::load_dataset(format, path, data::Split::kTrain).take_first(d.at("max_train_samples").get<int64_t>());
  test_data_ = data::load_dataset(format, path, data::Split::kTest).take_first(d.at("max_test_samples").get<int64_t>());
  auto spec = config::model_spec(cfg_);
  if (train_data_.num_classes > spec.num_classes)
    throw ConfigError("model.num_classes", std::to_string(spec.num_classes) + " is fewer than the dataset's " +
                                               std::to_string(train_data_.num_classes) + " classes");
  const auto shape = data::output_shape(train_data_, augment_options(d, true));
  if (shape[0] != spec.in_channels)
    throw ConfigError("data.augment.replicate_channels", "the model expects " + std::to_string(spec.in_channels) +
                                                             " input channels, the data gives " + std::to_string(shape[0]));

  torch::manual_seed(t.at("seed").get<uint64_t>());
  model_ = model::ResNeXt(spec);
  const std::string pretrained = cfg_.at("model").at("pretrained").get<std::string>();
  if (!pretrained.empty() && comm_.rank() == 0) {
    model::LoadOptions lo;
    lo.skip_head = cfg_.at("model").at("replace_head").get<bool>();
    model::load_state_dict(*model_, model::read_state_dict(pretrained), lo, pretrained);
  }
  model_->to(device_);
  // [Identical start] Rank 0's parameters and buffers win, then every rank proves it holds them.
  parallel::broadcast_module_state(*model_, comm_, 0, timeout());
  parallel::verify_replicas(*model_, comm_, "after the initial broadcast", timeout());

  optimizer_ = make_optimizer(t.at("optimizer"), model_->parameters());
  grad_sync_.reset(new GradSync{parallel::FlatGradientAllreduce(*model_, comm_, timeout())});

  const int64_t shard = data::shard_length(train_data_.count, comm_.world_size());
  const int64_t batch = t.at("batch_size").get<int64_t>() * t.at("accumulate_steps").get<int64_t>();
  steps_per_epoch_ = (shard + batch - 1) / batch;
  const int64_t cap = t.at("max_steps_per_epoch").get<int64_t>();
  if (cap > 0) steps_per_epoch_ = std::min(steps_per_epoch_, cap);
}

Trainer::~Trainer() = default;

comm::Millis Trainer::timeout() const {
  return comm::Millis(static_cast<int64_t>(cfg_.at("distributed").at("timeout_s").get<double>() * 1000));
}

void Trainer::maybe_inject_fault(int64_t global_step) const {
  // [Fault hook] Tests make one rank fail mid-epoch to prove the job ends instead of hanging.
  static const char* rank = std::getenv("RX_FAULT_RANK");
  static const char* step = std::getenv("RX_FAULT_STEP");
  if (rank && step && std::atoi(rank) == comm_.rank() && std::atoll(step) == global_step)
    throw Error("injected fault (RX_FAULT_RANK/RX_FAULT_STEP) at step " + std::to_string(global_step));
}

Trainer::EpochStats Trainer::train_epoch(int epoch) {
  const auto& t = cfg_.at("training");
  const auto& d = cfg_.at("data");
  const int accumulate = t.at("accumulate_steps").get<int>();
  data::ShardSpec spec{train_data_.count, comm_.world_size(), comm_.rank(), epoch,
                       t.at("seed").get<uint64_t>(), data::parse_shard_mode(d.at("shard_mode").get<std::string>()),
                       true};
  auto indices = data::shard_indices(spec);
  indices.resize(std::min<size_t>(indices.size(), static_cast<size_t>(steps_per_epoch_ * accumulate *
                                                                      t.at("batch_size").get<int64_t>())));
  data::LoaderOptions lo;
  lo.batch_size = t.at("batch_size").get<int64_t>();
  lo.num_threads = d.at("num_workers").get<int>();
  lo.prefetch = d.at("prefetch").get<int>();
  lo.channels_last = d.at("channels_last").get<bool>();
  lo.pin_memory = device_.is_cuda();
  lo.seed = t.at("seed").get<uint64_t>();
  lo.epoch = epoch;
  data::Loader loader(train_data_, std::move(indices), augment_options(d, true), lo);

  model_->train();
  const double smoothing = t.at("label_smoothing").get<double>();
  const int64_t log_every = t.at("log_every_steps").get<int64_t>();
  EpochStats stats;
  double window_start = now_seconds(), window_loss = 0;
  int64_t window_images = 0, window_batches = 0;
  for (int64_t step = 0; step < steps_per_epoch_; ++step) {
    maybe_inject_fault(global_step_);
    set_lr(*optimizer_, learning_rate(t, comm_.world_size(), epoch + static_cast<double>(step) / steps_per_epoch_));
    optimizer_->zero_grad();
    for (int micro = 0; micro < accumulate; ++micro) {
      timer_.start();
      auto batch = loader.next();
      RX_CHECK(batch.has_value(), "loader ended before step " << step << " of " << steps_per_epoch_);
      auto images = batch->images.to(device_, /*non_blocking=*/true);
      auto labels = batch->labels.to(device_, true);
      timer_.lap(Phase::kData);
      auto logits = model_->forward(images);
      auto loss = torch::nn::functional::cross_entropy(
          logits, labels, torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(smoothing));
      timer_.lap(Phase::kForward);
      (loss / accumulate).backward();
      timer_.lap(Phase::kBackward);
      const int64_t n = labels.size(0);
      stats.loss_sum += loss.item<double>() * n;
      stats.correct += logits.argmax(1).eq(labels).sum().item<int64_t>();
      stats.count += n;
      window_loss += loss.item<double>();
      window_images += n;
      ++window_batches;
    }
    timer_.start();
    grad_sync_->flat.sync();
    timer_.lap(Phase::kComm);
    optimizer_->step();
    timer_.lap(Phase::kOptimizer);
    ++global_step_;
    if ((step + 1) % log_every == 0 || step + 1 == steps_per_epoch_) {
      images_trained_ += window_images;
      log_progress(epoch, step + 1, steps_per_epoch_, window_loss / std::max<int64_t>(1, window_batches),
                   static_cast<double>(window_images), now_seconds() - window_start);
      window_start = now_seconds();
      window_loss = 0;
      window_images = window_batches = 0;
    }
  }
  return stats;
}

void Trainer::log_progress(int epoch, int64_t step, int64_t steps, double loss, double images, double seconds) {
  // One small all-gather per log step: every rank's loss, images/s and memory reach rank 0.
  auto mine = torch::tensor({loss, images / std::max(seconds, 1e-9), static_cast<double>(metrics::peak_rss_bytes())},
                            torch::kFloat64);
  auto all = torch::empty({comm_.world_size() * 3}, torch::kFloat64);
  comm::AllgatherOptions opts;
  opts.timeout = timeout();
  comm_.allgather(mine, all, opts)->wait(timeout());
  if (comm_.rank() != 0) return;
  const auto* v = all.data_ptr<double>();
  double mean_loss = 0, total_ips = 0;
  json ranks = json::array();
  for (int r = 0; r < comm_.world_size(); ++r) {
    mean_loss += v[3 * r] / comm_.world_size();
    total_ips += v[3 * r + 1];
    ranks.push_back({{"rank", r}, {"images_per_sec", v[3 * r + 1]}, {"peak_memory_bytes", static_cast<int64_t>(v[3 * r + 2])}});
  }
  const int epochs = cfg_.at("training").at("epochs").get<int>();
  const double done = epoch * static_cast<double>(steps) + step, total = static_cast<double>(epochs) * steps;
  const double elapsed = now_seconds() - train_start_;
  const double eta = done > 0 ? elapsed * (total - done) / done : 0;
  spdlog::info("epoch {}/{} step {}/{} loss {:.4f} lr {:.5f} images/s {:.1f} (total {:.1f}) ETA {:.0f}s", epoch + 1,
               epochs, step, steps, mean_loss, optimizer_->param_groups()[0].options().get_lr(), v[1], total_ips, eta);
  if (hooks_.on_progress)
    hooks_.on_progress({{"type", "progress"},
                        {"epoch", epoch + 1},
                        {"epochs", epochs},
                        {"step", step},
                        {"steps_per_epoch", steps},
                        {"loss", mean_loss},
                        {"test_accuracy", nullptr},
                        {"ranks", ranks}});
}

json Trainer::evaluate() {
  torch::NoGradGuard no_grad;
  // [Eval consistency] BN running statistics drift apart per rank (each sees its own batches); rank
  // 0's are broadcast so every rank evaluates the same model.
  parallel::broadcast_buffers(*model_, comm_, 0, timeout());
  model_->eval();
  const int k = static_cast<int>(model_->spec().num_classes);
  std::vector<int64_t> indices;
  for (int64_t i = comm_.rank(); i < test_data_.count; i += comm_.world_size()) indices.push_back(i);
  data::LoaderOptions lo;
  lo.batch_size = cfg_.at("training").at("batch_size").get<int64_t>() * 2;
  lo.num_threads = cfg_.at("data").at("num_workers").get<int>();
  lo.prefetch = cfg_.at("data").at("prefetch").get<int>();
  auto confusion = torch::zeros({k * k}, torch::kInt64);
  double loss_sum = 0;
  if (!indices.empty()) {
    data::Loader loader(test_data_, std::move(indices), augment_options(cfg_.at("data"), false), lo);
    while (auto batch = loader.next()) {
      auto logits = model_->forward(batch->images.to(device_)).to(torch::kCPU);
      loss_sum += torch::nn::functional::cross_entropy(
                      logits, batch->labels, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                      .item<double>();
      confusion.index_add_(0, batch->labels * k + logits.argmax(1), torch::ones_like(batch->labels));
    }
  }
  // Sums across ranks: the confusion matrix (which holds correct and total) and the loss.
  auto sums = torch::cat({confusion.to(torch::kFloat64), torch::tensor({loss_sum}, torch::kFloat64)});
  comm::AllreduceOptions opts;
  opts.timeout = timeout();
  comm_.allreduce(sums, opts)->wait(timeout());
  auto cm = sums.narrow(0, 0, k * k).round().to(torch::kInt64).view({k, k});
  const int64_t total = cm.sum().item<int64_t>(), correct = cm.trace().item<int64_t>();
  RX_CHECK(total == test_data_.count, "evaluated " << total << " of " << test_data_.count << " test samples");
  json per_class = json::array();
  for (int c = 0; c < k; ++c) {
    const int64_t n = cm[c].sum().item<int64_t>();
    per_class.push_back(n ? static_cast<double>(cm[c][c].item<int64_t>()) / n : 0.0);
  }
  json matrix = json::array();
  for (int r = 0; r < k; ++r) {
    std::vector<int64_t> row(cm[r].data_ptr<int64_t>(), cm[r].data_ptr<int64_t>() + k);
    matrix.push_back(row);
  }
  return {{"accuracy", static_cast<double>(correct) / std::max<int64_t>(1, total)},
          {"loss", sums[k * k].item<double>() / std::max<int64_t>(1, total)},
          {"samples", total},
          {"per_class_accuracy", per_class},
          {"confusion_matrix", matrix}};
}

json Trainer::gather_rank_stats() {
  const auto cuda = metrics::cuda_peak_memory(device_.is_cuda() ? device_.index() : 0);
  const double train_ms = timer_.sum_ms();
  const int64_t steps = std::max<int64_t>(1, global_step_);
  std::vector<double> mine = {static_cast<double>(images_trained_) / std::max(train_ms / 1000.0, 1e-9),
                              static_cast<double>(metrics::peak_rss_bytes()),
                              static_cast<double>(cuda.peak_allocated),
                              static_cast<double>(cuda.peak_reserved),
                              static_cast<double>(parallel::parameter_checksum(*model_) >> 11)};
  for (int p = 0; p < static_cast<int>(Phase::kCount); ++p) mine.push_back(timer_.total_ms(static_cast<Phase>(p)) / steps);
  const int width = static_cast<int>(mine.size());
  auto in = torch::tensor(mine, torch::kFloat64);
  auto all = torch::empty({comm_.world_size() * width}, torch::kFloat64);
  char host[64] = {};
  gethostname(host, sizeof host - 1);
  auto host_in = torch::from_blob(host, {64}, torch::kUInt8).clone();
  auto hosts = torch::empty({comm_.world_size() * 64}, torch::kUInt8);
  comm::AllgatherOptions opts;
  opts.timeout = timeout();
  comm_.allgather(in, all, opts)->wait(timeout());
  comm_.allgather(host_in, hosts, opts)->wait(timeout());
  json ranks = json::array();
  const auto* v = all.data_ptr<double>();
  for (int r = 0; r < comm_.world_size(); ++r) {
    const double* s = v + r * width;
    json split;
    double total = 0;
    for (int p = 0; p < static_cast<int>(Phase::kCount); ++p) {
      split[metrics::phase_name(static_cast<Phase>(p))] = s[5 + p];
      total += s[5 + p];
    }
    split["total"] = total;
    const bool on_gpu = device_.is_cuda();
    ranks.push_back({{"rank", r},
                     {"host", std::string(reinterpret_cast<const char*>(hosts.data_ptr<uint8_t>()) + 64 * r)},
                     {"images_per_sec", s[0]},
                     {"step_time_ms", split},
                     {"peak_memory_bytes", static_cast<int64_t>(on_gpu ? s[2] : s[1])},
                     {"peak_rss_bytes", static_cast<int64_t>(s[1])},
                     {"cuda_peak_allocated_bytes", static_cast<int64_t>(s[2])},
                     {"cuda_peak_reserved_bytes", static_cast<int64_t>(s[3])},
                     {"param_checksum", static_cast<int64_t>(s[4])}});
  }
  return ranks;
}

json Trainer::run() {
  const auto& t = cfg_.at("training");
  const int epochs = t.at("epochs").get<int>();
  const int eval_every = t.at("eval_every_epochs").get<int>();
  RunRecordBuilder record(cfg_, comm_, device_);
  record.set_dataset(train_data_.count, test_data_.count, steps_per_epoch_);
  spdlog::info("training {} ({} params) on {} ranks, {} train / {} test samples, {} steps per epoch",
               model_->spec().name, model::count_parameters(*model_), comm_.world_size(), train_data_.count,
               test_data_.count, steps_per_epoch_);
  train_start_ = now_seconds();
  double best = 0, last = 0;
  json last_eval;
  for (int epoch = 0; epoch < epochs; ++epoch) {
    const double t0 = now_seconds();
    auto stats = train_epoch(epoch);
    auto sums = torch::tensor({stats.loss_sum, static_cast<double>(stats.correct), static_cast<double>(stats.count)},
                              torch::kFloat64);
    comm_.allreduce(sums, {comm::ReduceOp::kSum, timeout()})->wait(timeout());
    parallel::verify_replicas(*model_, comm_, "after epoch " + std::to_string(epoch + 1), timeout());
    json entry = {{"epoch", epoch + 1},
                  {"train_loss", sums[0].item<double>() / std::max(1.0, sums[2].item<double>())},
                  {"train_accuracy", sums[1].item<double>() / std::max(1.0, sums[2].item<double>())},
                  {"lr", optimizer_->param_groups()[0].options().get_lr()},
                  {"test_accuracy", nullptr}};
    const bool final_epoch = epoch + 1 == epochs;
    if (final_epoch || (eval_every > 0 && (epoch + 1) % eval_every == 0)) {
      last_eval = evaluate();
      last = last_eval["accuracy"].get<double>();
      best = std::max(best, last);
      entry["test_accuracy"] = last;
      entry["test_loss"] = last_eval["loss"];
      if (comm_.rank() == 0 && hooks_.on_progress)
        hooks_.on_progress({{"type", "progress"}, {"epoch", epoch + 1}, {"epochs", epochs},
                            {"step", steps_per_epoch_}, {"steps_per_epoch", steps_per_epoch_},
                            {"loss", entry["train_loss"]}, {"test_accuracy", last}});
    }
    entry["seconds"] = now_seconds() - t0;
    spdlog::info("epoch {}/{} done: train loss {:.4f} acc {:.4f}, test acc {}", epoch + 1, epochs,
                 entry["train_loss"].get<double>(), entry["train_accuracy"].get<double>(),
                 entry["test_accuracy"].is_null() ? std::string("-") : std::to_string(last));
    record.add_epoch(entry);
  }
  return record.finish(last, best, last_eval, gather_rank_stats(), now_seconds() - train_start_);
}

}  // namespace rx::worker
