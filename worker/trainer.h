#pragma once
// One rank's data-parallel training loop: builds the replica, synchronises it, trains on this rank's
// shard, evaluates on this rank's part of the test set, and assembles the run record.
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <functional>
#include <memory>

#include "common/comm/communicator.h"
#include "common/data/dataset.h"
#include "common/metrics/phase_timer.h"
#include "common/model/resnext.h"

namespace rx::worker {

struct TrainerHooks {
  // Rank 0 only: a progress event (the coordinator's report body) at every log step and evaluation.
  std::function<void(const nlohmann::json&)> on_progress;
};

class Trainer {
 public:
  Trainer(nlohmann::json resolved_config, comm::Communicator& comm, torch::Device device, TrainerHooks hooks = {});
  ~Trainer();

  // Trains for training.epochs and returns the run record (complete on every rank; rank 0 writes it).
  nlohmann::json run();

  model::ResNeXt& model() { return model_; }

 private:
  struct EpochStats;
  EpochStats train_epoch(int epoch);
  nlohmann::json evaluate();
  void log_progress(int epoch, int64_t step, int64_t steps, double loss, double window_images, double window_seconds);
  nlohmann::json gather_rank_stats();
  void maybe_inject_fault(int64_t global_step) const;
  comm::Millis timeout() const;

  nlohmann::json cfg_;
  comm::Communicator& comm_;
  torch::Device device_;
  TrainerHooks hooks_;
  data::Dataset train_data_, test_data_;
  model::ResNeXt model_{nullptr};
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  struct GradSync;
  std::unique_ptr<GradSync> grad_sync_;
  metrics::PhaseTimer timer_;
  int64_t images_trained_ = 0;
  int64_t global_step_ = 0;
  int64_t steps_per_epoch_ = 0;
  double train_start_ = 0;
};

}  // namespace rx::worker
