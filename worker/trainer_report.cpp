// The trainer's reporting side: progress lines and events, distributed evaluation, and the per-rank
// statistics gathered into the run record. Split from trainer.cpp to keep each file readable.
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <optional>

#include "common/data/device_augment.h"
#include "common/data/loader.h"
#include "common/metrics/memory.h"
#include "common/parallel/replica_sync.h"
#include "common/util/error.h"
#include "worker/trainer.h"
#include "worker/trainer_detail.h"

namespace rx::worker {

using json = nlohmann::json;
using detail::augment_options;
using detail::now_seconds;
using metrics::Phase;

void Trainer::log_progress(int epoch, int64_t step, int64_t steps, double loss, double images,
                           double seconds) {
  // One small all-gather per log step: every rank's loss, images/s and memory reach rank 0.
  auto mine =
      torch::tensor({loss, images / std::max(seconds, 1e-9), static_cast<double>(metrics::peak_rss_bytes())},
                    torch::kFloat64);
  auto all = torch::empty({comm_.world_size() * 3}, torch::kFloat64);
  comm::AllgatherOptions opts;
  opts.timeout = timeout();
  comm_.allgather(mine, all, opts)->wait(timeout());
  const auto& hosts = all_hosts();
  if (comm_.rank() != 0) return;
  const auto* v = all.data_ptr<double>();
  double mean_loss = 0, total_ips = 0;
  json ranks = json::array();
  for (int r = 0; r < comm_.world_size(); ++r) {
    mean_loss += v[3 * r] / comm_.world_size();
    total_ips += v[3 * r + 1];
    ranks.push_back({{"rank", r},
                     {"host", hosts[r]},
                     {"images_per_sec", v[3 * r + 1]},
                     {"peak_memory_bytes", static_cast<int64_t>(v[3 * r + 2])}});
  }
  const int epochs = spec_.training.epochs;
  const double done = epoch * static_cast<double>(steps) + step, total = static_cast<double>(epochs) * steps;
  const double elapsed = now_seconds() - train_start_;
  const double eta = done > 0 ? elapsed * (total - done) / done : 0;
  spdlog::info("epoch {}/{} step {}/{} loss {:.4f} lr {:.5f} images/s {:.1f} (total {:.1f}) ETA {:.0f}s",
               epoch + 1, epochs, step, steps, mean_loss, optimizer_->param_groups()[0].options().get_lr(),
               v[1], total_ips, eta);
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

// [Hosts] Gathered on the first call (a collective: every rank calls it at the same point) and kept,
// so progress reports can name each rank's node without a string all-gather per log step.
const std::vector<std::string>& Trainer::all_hosts() {
  if (!hosts_.empty()) return hosts_;
  char host[64] = {};
  gethostname(host, sizeof host - 1);
  auto host_in = torch::from_blob(host, {64}, torch::kUInt8).clone();
  auto hosts = torch::empty({comm_.world_size() * 64}, torch::kUInt8);
  comm::AllgatherOptions opts;
  opts.timeout = timeout();
  comm_.allgather(host_in, hosts, opts)->wait(timeout());
  for (int r = 0; r < comm_.world_size(); ++r)
    hosts_.emplace_back(reinterpret_cast<const char*>(hosts.data_ptr<uint8_t>()) + 64 * r);
  return hosts_;
}

json Trainer::evaluate() {
  json own = evaluate_current_weights();
  if (!ema_) return own;
  json averaged;
  {
    // [Eval consistency] applies to the average too: evaluate_current_weights() broadcasts rank 0's
    // averaged BatchNorm statistics, and Applied keeps them in every rank's average.
    optim::WeightEma::Applied applied(*ema_);
    averaged = evaluate_current_weights();
  }
  averaged["raw_accuracy"] = own["accuracy"];
  averaged["raw_loss"] = own["loss"];
  return averaged;
}

json Trainer::evaluate_current_weights() {
  torch::NoGradGuard no_grad;
  // [Eval consistency] BN running statistics drift apart per rank (each sees its own batches); rank
  // 0's are broadcast so every rank evaluates the same model.
  parallel::broadcast_buffers(*model_, comm_, 0, timeout());
  model_->eval();
  const int k = static_cast<int>(model_->spec().num_classes);
  std::vector<int64_t> indices;
  if (local_shards_) {  // this rank's block is its part of the test set
    for (int64_t i = 0; i < test_data_.count; ++i) indices.push_back(i);
  } else {
    for (int64_t i = comm_.rank(); i < test_data_.count; i += comm_.world_size()) indices.push_back(i);
  }
  data::LoaderOptions lo;
  lo.batch_size = spec_.training.batch_size * 2;
  lo.num_threads = spec_.data.num_workers;
  lo.prefetch = spec_.data.prefetch;
  lo.channels_last = spec_.data.channels_last;  // as the weights: no layout conversion in each conv
  lo.defer_augment = spec_.data.augment.on_device;
  auto confusion = torch::zeros({k * k}, torch::kInt64);
  double loss_sum = 0;
  if (!indices.empty()) {
    data::Loader loader(test_data_, std::move(indices), augment_options(spec_.data, false), lo);
    std::optional<data::DeviceAugmenter> on_device;  // [Device augment]
    if (lo.defer_augment) on_device.emplace(loader.augmenter(), device_);
    while (auto batch = loader.next()) {
      const auto images = on_device ? on_device->images(*batch, lo.channels_last) : batch->images.to(device_);
      torch::Tensor logits;
      {
        model::AutocastScope autocast(precision_, device_);
        logits = model_->forward(images);
      }
      logits = logits.to(torch::kCPU, torch::kFloat);
      loss_sum +=
          torch::nn::functional::cross_entropy(
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
  RX_CHECK(total == test_total_, "evaluated " << total << " of " << test_total_ << " test samples");
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
  const auto cuda = metrics::cuda_peak_memory(device_.is_cuda() ? device_.index() : -1);
  const double train_ms = timer_.sum_ms();
  const int64_t steps = std::max<int64_t>(1, global_step_);
  std::vector<double> mine = {static_cast<double>(images_trained_) / std::max(train_ms / 1000.0, 1e-9),
                              static_cast<double>(metrics::peak_rss_bytes()),
                              static_cast<double>(cuda.peak_allocated),
                              static_cast<double>(cuda.peak_reserved),
                              static_cast<double>(parallel::parameter_checksum(*model_) >> 11),
                              static_cast<double>(comm_.local_rank()),
                              static_cast<double>(at::get_num_threads())};  // [Thread budget]
  constexpr int kPhases = 7;  // index of the first phase time in `mine`
  for (int p = 0; p < static_cast<int>(Phase::kCount); ++p)
    mine.push_back(timer_.total_ms(static_cast<Phase>(p)) / steps);
  const int width = static_cast<int>(mine.size());
  auto in = torch::tensor(mine, torch::kFloat64);
  auto all = torch::empty({comm_.world_size() * width}, torch::kFloat64);
  comm::AllgatherOptions opts;
  opts.timeout = timeout();
  comm_.allgather(in, all, opts)->wait(timeout());
  const auto& hosts = all_hosts();
  json ranks = json::array();
  const auto* v = all.data_ptr<double>();
  for (int r = 0; r < comm_.world_size(); ++r) {
    const double* s = v + r * width;
    json split;
    double total = 0;
    for (int p = 0; p < static_cast<int>(Phase::kCount); ++p) {
      split[metrics::phase_name(static_cast<Phase>(p))] = s[kPhases + p];
      total += s[kPhases + p];
    }
    split["total"] = total;
    const bool on_gpu = device_.is_cuda();
    ranks.push_back({{"rank", r},
                     {"host", hosts[r]},
                     {"local_rank", static_cast<int>(s[5])},
                     {"threads", static_cast<int>(s[6])},
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

}  // namespace rx::worker
