#include "worker/trainer.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <optional>

#include "common/comm/hang/traced_communicator.h"
#include "common/config/job_config.h"
#include "common/data/device_augment.h"
#include "common/data/loader.h"
#include "common/data/shard_plan.h"
#include "common/metrics/memory.h"
#include "common/model/precision.h"
#include "common/optim/flat_groups.h"
#include "common/parallel/reducer.h"
#include "common/parallel/replica_sync.h"
#include "common/util/error.h"
#include "common/util/host_allocator.h"
#include "common/util/rng.h"
#include "worker/lr_schedule.h"
#include "worker/run_record.h"
#include "worker/step_sums.h"
#include "worker/trainer_detail.h"

namespace rx::worker {

using json = nlohmann::json;
using metrics::Phase;

namespace detail {
double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace detail

namespace {
using detail::augment_options;
using detail::now_seconds;

void set_lr(torch::optim::Optimizer& opt, double lr) {
  for (auto& g : opt.param_groups()) g.options().set_lr(lr);
}
}  // namespace

namespace {
volatile std::sig_atomic_t g_stop_signal = 0;
extern "C" void on_preempt_signal(int sig) { g_stop_signal = sig; }
}  // namespace

void install_preemption_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_preempt_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGUSR1, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

void Trainer::attach_trace(metrics::TraceRecorder& trace) {
  trace.set_first_step(global_step_);
  timer_.set_sink([&trace](const metrics::PhaseRecord& r) { trace.on_phase(r); });
  grad_sync_->reducer.set_observer([&trace](const parallel::BucketTiming& b) {
    trace.on_bucket(b.step, b.bucket, b.bytes, b.ready, b.launched, b.finished);
  });
}

comm::Millis Trainer::timeout() const { return spec_.distributed.timeout(); }

std::vector<int64_t> Trainer::epoch_indices(int epoch, int64_t start_position) {
  const uint64_t seed = spec_.training.seed;
  if (!local_shards_) {
    data::ShardSpec spec{train_data_.count,
                         comm_.world_size(),
                         comm_.rank(),
                         epoch,
                         seed,
                         data::parse_shard_mode(spec_.data.shard_mode),
                         true,
                         start_position};
    return data::shard_indices(spec);
  }
  // [Local shards] This rank holds only its own static block (data.source "coordinator"): it is
  // shuffled locally each epoch and padded cyclically to the longest rank's block, so every rank takes
  // the same number of steps.
  if (start_position % comm_.world_size() != 0)
    throw ConfigError("checkpoint.resume", "coordinator-served shards resume only on the same world size");
  auto own = data::shard_indices({train_data_.count, 1, 0, epoch,
                                  mix_seed({seed, static_cast<uint64_t>(comm_.rank())}),
                                  data::ShardMode::kStatic, true, 0});
  std::vector<int64_t> out;
  for (int64_t i = start_position / comm_.world_size(); i < local_shard_len_; ++i)
    out.push_back(own[static_cast<size_t>(i % train_data_.count)]);
  return out;
}

void Trainer::maybe_inject_fault(int64_t global_step) const {
  // [Fault hook] Tests make one rank fail mid-epoch to prove the job ends instead of hanging.
  static const char* rank = std::getenv("RX_FAULT_RANK");
  static const char* step = std::getenv("RX_FAULT_STEP");
  if (rank && step && std::atoi(rank) == comm_.rank() && std::atoll(step) == global_step)
    throw Error("injected fault (RX_FAULT_RANK/RX_FAULT_STEP) at step " + std::to_string(global_step));
}

Trainer::EpochStats Trainer::global_sums(const EpochStats& local) {
  auto sums =
      torch::tensor({local.loss_sum, static_cast<double>(local.correct), static_cast<double>(local.count)},
                    torch::kFloat64);
  comm_.allreduce(sums, {comm::ReduceOp::kSum, timeout()})->wait(timeout());
  return {sums[0].item<double>(), static_cast<int64_t>(sums[1].item<double>()),
          static_cast<int64_t>(sums[2].item<double>())};
}

void Trainer::save_checkpoint(int epoch, int64_t position, const EpochStats& partial) {
  comm::hang::mark_phase(comm_, "checkpoint");
  const auto sums = global_sums(partial);  // collective: every rank takes part
  if (comm_.rank() == 0) {
    json cursor = {{"epoch", epoch},
                   {"epoch_position", position},
                   {"world_size", comm_.world_size()},
                   {"epochs", epoch_records_},
                   {"best_test_accuracy", best_accuracy_},
                   {"partial_epoch", {sums.loss_sum, sums.correct, sums.count}},
                   {"loss_scaler", scaler_->state()},
                   {"config_sha256", config::config_hash(spec_)}};
    checkpoints_->save(global_step_, *model_, *optimizer_, cursor, ema_.get());
    if (position == 0)
      spdlog::info("checkpoint written at step {} (after epoch {})", global_step_, epoch);
    else
      spdlog::info("checkpoint written at step {} (epoch {}, position {})", global_step_, epoch + 1,
                   position);
  }
  comm_.barrier(timeout());
}

StepGraph::Outputs Trainer::forward_loss(const torch::Tensor& images, const torch::Tensor& labels) {
  torch::Tensor logits;
  {
    model::AutocastScope autocast(precision_, device_);
    logits = model_->forward(images);
  }
  logits = logits.to(torch::kFloat);  // the loss in fp32 whatever the forward's precision
  auto loss = torch::nn::functional::cross_entropy(
      logits, labels,
      torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(spec_.training.label_smoothing));
  return {loss, logits};
}

FixedAddresses Trainer::graph_fixed_tensors() const {
  FixedAddresses out;
  for (const auto& p : model_->named_parameters()) out.add_parameter(p.key(), p.value());
  for (const auto& b : model_->named_buffers()) out.add_buffer(b.key(), b.value());
  return out;
}

bool Trainer::graphed_forward_backward(const torch::Tensor& images, const torch::Tensor& labels,
                                       StepSums& sums) {
  if (!graph_) return false;
  auto& reducer = grad_sync_->reducer;
  const int64_t n = labels.size(0);
  if (!graph_->captured()) {
    if (graph_warmup_left_ > 0 || n != spec_.training.batch_size) {
      graph_warmup_left_ = std::max(0, graph_warmup_left_ - 1);
      return false;
    }
    comm::hang::mark_phase(comm_, "capture");
    reducer.prepare_for_backward(false);  // the hooks stay silent while backward is captured
    graph_->capture(
        images, labels,
        [this](const torch::Tensor& images, const torch::Tensor& labels) {
          return forward_loss(images, labels);
        },
        [this](const torch::Tensor& loss) { scaler_->scale_loss(loss).backward(); }, graph_fixed_tensors());
    graph_captured_at_ = global_step_;
    spdlog::info("training.cuda_graph: step captured at step {} (batch {})", global_step_, n);
  } else if (graph_->fits(images, labels)) {
    graph_->check_fixed();
    graph_->load(images, labels);
  } else {
    return false;  // another shape (the epoch's last batch): the eager step
  }
  timer_.lap(Phase::kData);
  comm::hang::mark_phase(comm_, "forward");
  graph_->replay_forward();
  timer_.lap(Phase::kForward);
  comm::hang::mark_phase(comm_, "backward");
  reducer.prepare_for_backward(true);
  graph_->replay_backward();
  reducer.mark_all_ready();  // no hook ran in the replay: every bucket's all-reduce starts now
  timer_.lap(Phase::kBackward);
  const auto& out = graph_->outputs();
  sums.add(out.loss, out.logits, graph_->labels(), n);
  ++graphed_steps_;
  return true;
}

Trainer::EpochStats Trainer::train_epoch(int epoch, int64_t start_position, EpochStats stats) {
  const auto& t = spec_.training;
  const auto& d = spec_.data;
  const int accumulate = t.accumulate_steps;
  const int64_t per_step = accumulate * t.batch_size;
  const int64_t first_step = start_position / (per_step * comm_.world_size());
  auto indices = epoch_indices(epoch, start_position);
  const int64_t steps = std::min<int64_t>(steps_per_epoch_ - first_step,
                                          (static_cast<int64_t>(indices.size()) + per_step - 1) / per_step);
  indices.resize(
      std::min<size_t>(indices.size(), static_cast<size_t>(std::max<int64_t>(0, steps) * per_step)));
  data::LoaderOptions lo;
  lo.batch_size = t.batch_size;
  lo.num_threads = d.num_workers;
  lo.prefetch = d.prefetch;
  lo.channels_last = d.channels_last;
  lo.pin_memory = device_.is_cuda();
  lo.defer_augment = d.augment.on_device;
  lo.seed = t.seed;
  lo.epoch = epoch;
  data::Loader loader(train_data_, std::move(indices), augment_options(d, true), lo);
  std::optional<data::DeviceAugmenter> on_device;  // [Device augment]
  if (lo.defer_augment) on_device.emplace(loader.augmenter(), device_);

  model_->train();
  const int64_t log_every = t.log_every_steps;
  const int64_t every_steps = spec_.checkpoint.every_steps;
  double window_start = now_seconds();
  int64_t window_images = 0, window_batches = 0;
  StepSums sums(device_, stats.loss_sum, stats.correct);
  for (int64_t step = first_step; step < first_step + steps; ++step) {
    maybe_inject_fault(global_step_);
    comm::hang::mark_step(comm_, global_step_);  // [Collective trace] where this rank is, for hang reports
    set_lr(*optimizer_,
           learning_rate(t, comm_.world_size(), epoch + static_cast<double>(step) / steps_per_epoch_));
    grad_sync_->reducer.zero_grads();  // one fill per bucket, not one per parameter
    for (int micro = 0; micro < accumulate; ++micro) {
      comm::hang::mark_phase(comm_, "data");
      timer_.start();
      auto batch = loader.next();
      RX_CHECK(batch.has_value(), "loader ended before step " << step << " of " << steps_per_epoch_);
      const int64_t n = batch->labels.size(0);
      // The images on the device, augmented there, or still in (pinned) host memory.
      const auto images = on_device ? on_device->images(*batch, lo.channels_last) : batch->images;
      if (!graphed_forward_backward(images, batch->labels, sums)) {
        auto labels = batch->labels.to(device_, /*non_blocking=*/true);
        auto x = images.to(device_, true);  // the same tensor when it is on the device already
        timer_.lap(Phase::kData);
        comm::hang::mark_phase(comm_, "forward");
        auto out = forward_loss(x, labels);
        timer_.lap(Phase::kForward);
        comm::hang::mark_phase(comm_, "backward");
        grad_sync_->reducer.prepare_for_backward(micro + 1 == accumulate);  // earlier micro-batches: no sync
        scaler_->scale_loss(out.loss / accumulate).backward();
        timer_.lap(Phase::kBackward);
        sums.add(out.loss, out.logits, labels, n);
        ++eager_steps_;
      }
      stats.count += n;
      window_images += n;
      ++window_batches;
    }
    comm::hang::mark_phase(comm_, "gradient sync");
    timer_.start();
    grad_sync_->reducer.finalize();
    timer_.lap(Phase::kComm);
    comm::hang::mark_phase(comm_, "optimizer");
    if (scaler_->unscale_and_update(params_)) {  // fp16: an inf/NaN step is skipped
      optimizer_->step();
      if (ema_) ema_->update();
    }
    timer_.lap(Phase::kOptimizer);
    if (step + 1 == steps_per_epoch_) grad_sync_->reducer.gather_arrivals();  // epoch end, all ranks
    ++global_step_;
    if ((step + 1) % log_every == 0 || step + 1 == steps_per_epoch_) {
      images_trained_ += window_images;
      log_progress(epoch, step + 1, steps_per_epoch_,
                   sums.take_window_loss() / std::max<int64_t>(1, window_batches),
                   static_cast<double>(window_images), now_seconds() - window_start);
      window_start = now_seconds();
      window_images = window_batches = 0;
    }
    const int64_t position = start_position + (step + 1 - first_step) * per_step * comm_.world_size();
    comm::hang::mark_phase(comm_, "end of step");
    if (stop_vote_->next(g_stop_signal)) {  // [Stop vote]: every rank after the same step
      sums.store(stats);
      save_checkpoint(epoch, position, stats);
      throw Preempted("stopped by signal after step " + std::to_string(global_step_) +
                      "; checkpoint written");
    }
    if (every_steps > 0 && global_step_ % every_steps == 0 && step + 1 < steps_per_epoch_) {
      sums.store(stats);
      save_checkpoint(epoch, position, stats);
    }
  }
  sums.store(stats);
  return stats;
}

json Trainer::run() {
  const int epochs = spec_.training.epochs;
  const int eval_every = spec_.training.eval_every_epochs;
  RunRecordBuilder record(spec_, comm_, device_);
  record.set_dataset(train_total_, test_total_, steps_per_epoch_);
  spdlog::info("training {} ({} params) on {} ranks, {} train / {} test samples, {} steps per epoch",
               model_->spec().name, model::count_parameters(*model_), comm_.world_size(), train_total_,
               test_total_, steps_per_epoch_);
  train_start_ = now_seconds();
  double last = 0;
  json last_eval;
  for (const auto& e : epoch_records_) record.add_epoch(e);
  const int first_epoch = resume_.is_null() ? 0 : resume_["epoch"].get<int>();
  for (int epoch = first_epoch; epoch < epochs; ++epoch) {
    const double t0 = now_seconds();
    int64_t position = 0;
    EpochStats carried;
    if (!resume_.is_null() && epoch == first_epoch) {
      position = resume_["epoch_position"].get<int64_t>();
      if (comm_.rank() == 0) {  // the interrupted part's global sums, counted once
        const auto& p = resume_["partial_epoch"];
        carried = {p[0].get<double>(), p[1].get<int64_t>(), p[2].get<int64_t>()};
      }
    }
    const auto sums = global_sums(train_epoch(epoch, position, carried));
    comm::hang::mark_phase(comm_, "end of epoch");
    parallel::verify_replicas(*model_, comm_, "after epoch " + std::to_string(epoch + 1), timeout());
    json entry = {{"epoch", epoch + 1},
                  {"train_loss", sums.loss_sum / std::max<int64_t>(1, sums.count)},
                  {"train_accuracy", static_cast<double>(sums.correct) / std::max<int64_t>(1, sums.count)},
                  {"lr", optimizer_->param_groups()[0].options().get_lr()},
                  {"test_accuracy", nullptr}};
    const bool final_epoch = epoch + 1 == epochs;
    if (final_epoch || (eval_every > 0 && (epoch + 1) % eval_every == 0)) {
      comm::hang::mark_phase(comm_, "evaluation");
      last_eval = evaluate();
      last = last_eval["accuracy"].get<double>();
      best_accuracy_ = std::max(best_accuracy_, last);
      entry["test_accuracy"] = last;
      entry["test_loss"] = last_eval["loss"];
      if (ema_) entry["test_accuracy_raw"] = last_eval["raw_accuracy"];
      if (comm_.rank() == 0 && hooks_.on_progress)
        hooks_.on_progress({{"type", "progress"},
                            {"epoch", epoch + 1},
                            {"epochs", epochs},
                            {"step", steps_per_epoch_},
                            {"steps_per_epoch", steps_per_epoch_},
                            {"loss", entry["train_loss"]},
                            {"test_accuracy", last},
                            {"straggler", grad_sync_->reducer.stats_json().value("straggler", json())}});
    }
    entry["seconds"] = now_seconds() - t0;
    spdlog::info("epoch {}/{} done: train loss {:.4f} acc {:.4f}, test acc {}", epoch + 1, epochs,
                 entry["train_loss"].get<double>(), entry["train_accuracy"].get<double>(),
                 entry["test_accuracy"].is_null() ? std::string("-") : std::to_string(last));
    record.add_epoch(entry);
    epoch_records_.push_back(entry);
    const int64_t every_epochs = spec_.checkpoint.every_epochs;
    if (checkpointing_ && (final_epoch || (every_epochs > 0 && (epoch + 1) % every_epochs == 0)))
      save_checkpoint(epoch + 1, 0, {});
  }
  stop_vote_->finish();                                 // [Stop vote] the last one, cast after the last step
  if (last_eval.is_null() && comm_.world_size() > 0) {  // resumed after the last epoch finished
    last_eval = evaluate();
    last = last_eval["accuracy"].get<double>();
  }
  const double best = best_accuracy_;
  json out = record.finish(last, best, last_eval, gather_rank_stats(), now_seconds() - train_start_);
  // [Reducer stats] buckets, exposed comm, straggler (its rank and host)
  out["reducer"] = with_straggler_host(grad_sync_->reducer.stats_json(), out["ranks"]);
  out["numerics"] = {{"precision", model::precision_name(precision_)},
                     {"loss_scale", scaler_->scale()},
                     {"skipped_steps", scaler_->skipped_steps()},
                     {"channels_last", spec_.data.channels_last},
                     {"fused_bn_relu", spec_.model.fused_bn_relu},
                     {"host_allocator", host_allocator_policy()},
                     {"cudnn_benchmark", device_.is_cuda() && spec_.training.cudnn_benchmark},
                     {"cudnn_deterministic", device_.is_cuda() && spec_.training.cudnn_deterministic}};
  out["numerics"]["cuda_graph"] = json(false);
  if (graph_)
    out["numerics"]["cuda_graph"] = {
        {"captured_at_step", graph_captured_at_ >= 0 ? json(graph_captured_at_) : json()},
        {"graphed_steps", graphed_steps_},
        {"eager_steps", eager_steps_}};
  if (const auto* fused = dynamic_cast<const optim::FusedOptimizer*>(optimizer_.get()))
    out["numerics"]["fused_optimizer"] = {{"groups", fused->fused_groups()},
                                          {"loose_parameters", fused->loose_parameters()}};
  return out;
}

}  // namespace rx::worker