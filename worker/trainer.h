#pragma once
// One rank's data-parallel training loop: builds the replica, synchronises it, trains on this rank's
// shard, evaluates on this rank's part of the test set, and assembles the run record.
#include <torch/torch.h>

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/comm/communicator.h"
#include "common/config/job_spec.h"
#include "common/data/dataset.h"
#include "common/data/loader.h"
#include "common/metrics/phase_timer.h"
#include "common/metrics/trace_events.h"
#include "common/model/precision.h"
#include "common/model/resnext.h"
#include "common/optim/weight_ema.h"
#include "common/util/error.h"
#include "worker/checkpoint.h"
#include "worker/step_graph.h"
#include "worker/stop_vote.h"

namespace rx::worker {

class StepSums;  // worker/step_sums.h

// Thrown on every rank after a SIGUSR1/SIGTERM was agreed on and the checkpoint is written.
class Preempted : public Error {
 public:
  using Error::Error;
};

// [Preemption] The signal handler only sets a flag; ranks agree on it after every step (one tiny
// all-reduce), so all of them stop after the same step and no rank exits alone.
void install_preemption_handlers();

struct TrainerHooks {
  // Rank 0 only: a progress event (the coordinator's report body) at every log step and evaluation.
  std::function<void(const nlohmann::json&)> on_progress;
  // Every rank, for data.source "coordinator": the bytes of this rank's block of `split` ("train" or
  // "test"), `part` "images"/"labels" for IDX data, "" for CIFAR records (checksum already verified).
  std::function<std::string(const std::string& part, const std::string& split)> fetch_shard;
  // Every rank of a world > 1: a CPU communicator over the same ranks for the per-step stop vote
  // ([Stop vote] in worker/stop_vote.h), kept off the training communicator (a GPU one would put the
  // vote on the device; a traced one would count a vote in flight as a hang).
  comm::Communicator* vote_comm = nullptr;
};

class Trainer {
 public:
  Trainer(config::JobSpec spec, comm::Communicator& comm, torch::Device device, TrainerHooks hooks = {});
  ~Trainer();

  // Trains for training.epochs and returns the run record (complete on every rank; rank 0 writes it).
  nlohmann::json run();

  model::ResNeXt& model() { return model_; }
  // output.trace: feeds the step phases and bucket all-reduces of the coming steps to `trace`.
  void attach_trace(metrics::TraceRecorder& trace);

 private:
  struct EpochStats {
    double loss_sum = 0;
    int64_t correct = 0;
    int64_t count = 0;
  };
  EpochStats train_epoch(int epoch, int64_t start_position, EpochStats stats);
  // The forward pass (under autocast) and the fp32 loss of one batch already on the device.
  StepGraph::Outputs forward_loss(const torch::Tensor& images, const torch::Tensor& labels);
  // [Graphed step] Forward and backward of one batch by CUDA graph replay (capturing first, once the
  // warm-up steps are done); false when this batch must take the eager step instead.
  // `images`: on the device, or in host memory.
  bool graphed_forward_backward(const torch::Tensor& images, const torch::Tensor& labels, StepSums& sums);
  // What the captured graphs use in place: every parameter, its gradient and every buffer.
  FixedAddresses graph_fixed_tensors() const;
  EpochStats global_sums(const EpochStats& local);
  void save_checkpoint(int epoch, int64_t position, const EpochStats& partial);
  // The test-set evaluation of the model, or with training.ema_decay of its weight average (with the
  // model's own figures as raw_accuracy / raw_loss).
  nlohmann::json evaluate();
  nlohmann::json evaluate_current_weights();
  void log_progress(int epoch, int64_t step, int64_t steps, double loss, double window_images,
                    double window_seconds);
  nlohmann::json gather_rank_stats();
  const std::vector<std::string>& all_hosts();
  void maybe_inject_fault(int64_t global_step) const;
  data::Dataset fetch_local_block(data::Split split);
  std::vector<int64_t> epoch_indices(int epoch, int64_t start_position);
  comm::Millis timeout() const;

  config::JobSpec spec_;
  comm::Communicator& comm_;
  torch::Device device_;
  TrainerHooks hooks_;
  data::Dataset train_data_, test_data_;
  bool local_shards_ = false;    // data.source "coordinator": train_data_/test_data_ hold this rank's blocks
  int64_t local_shard_len_ = 0;  // the longest rank's train block (local mode)
  int64_t train_total_ = 0;      // train samples over all ranks
  int64_t test_total_ = 0;       // test samples over all ranks
  model::ResNeXt model_{nullptr};
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  std::unique_ptr<optim::WeightEma> ema_;  // training.ema_decay > 0 ([Weight EMA])
  std::vector<torch::Tensor> params_;      // the model's parameters, as trained (after any checkpoint load)
  model::Precision precision_ = model::Precision::kFp32;
  std::unique_ptr<model::LossScaler> scaler_;
  struct GradSync;
  std::unique_ptr<GradSync> grad_sync_;
  std::unique_ptr<StopVote> stop_vote_;
  std::unique_ptr<StepGraph> graph_;  // training.cuda_graph
  int graph_warmup_left_ = 0;         // eager steps still to run before the capture
  int64_t graph_captured_at_ = -1;    // global step of the capture
  int64_t graphed_steps_ = 0, eager_steps_ = 0;
  metrics::PhaseTimer timer_;
  int64_t images_trained_ = 0;
  int64_t global_step_ = 0;
  int64_t steps_per_epoch_ = 0;
  double train_start_ = 0;
  std::vector<std::string> hosts_;  // every rank's hostname, gathered once (all_hosts())
  // Checkpoint/resume state (see worker/checkpoint.h).
  std::unique_ptr<CheckpointStore> checkpoints_;
  bool checkpointing_ = false;  // a cadence or resume is configured (else only preemption writes one)
  nlohmann::json resume_;       // the loaded cursor, or null
  nlohmann::json epoch_records_ = nlohmann::json::array();
  double best_accuracy_ = 0;
};

}  // namespace rx::worker
