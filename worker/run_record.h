#pragma once
// The run record (result.json): speed, accuracy, memory and the exact config of one run, together.
// Its top-level keys are a contract read by the coordinator, scripts and tests:
//   final_test_accuracy, best_test_accuracy (fractions), world_size, config (resolved), config_sha256,
//   versions, epochs[{epoch, train_loss, train_accuracy, test_accuracy, ...}],
//   ranks[{rank, images_per_sec, step_time_ms{data_wait, forward, backward, comm_exposed, optimizer,
//   total}, peak_memory_bytes, host, local_rank, ...}],
//   nodes[{host, ranks[], images_per_sec, peak_memory_bytes}] (per-node sums of the ranks' figures),
//   recipe{crop_padding, flip, random_erasing, label_smoothing, weight_ema, epochs, global_batch}; with
//   training.ema_decay, test accuracies are the weight average's and final_test_accuracy_raw and
//   epochs[].test_accuracy_raw are the model's own.
#include <torch/torch.h>

#include <nlohmann/json.hpp>
#include <string>

#include "common/comm/communicator.h"
#include "common/config/job_spec.h"

namespace rx::worker {

class RunRecordBuilder {
 public:
  RunRecordBuilder(const config::JobSpec& spec, const comm::Communicator& comm, torch::Device device);
  void set_dataset(int64_t train_samples, int64_t test_samples, int64_t steps_per_epoch);
  void add_epoch(nlohmann::json entry);
  nlohmann::json finish(double final_accuracy, double best_accuracy, const nlohmann::json& last_eval,
                        nlohmann::json ranks, double wall_seconds);

 private:
  nlohmann::json record_;
};

// The run record's "recipe": the accuracy-shaping settings, null where one is off ([Recipe]).
nlohmann::json recipe_json(const config::JobSpec& spec, int world_size);

// The ranks of a run record grouped by host: summed images/s and peak memory per node.
nlohmann::json node_aggregates(const nlohmann::json& ranks);

// The reducer's stats with straggler.host set to the straggler rank's host (null when none measured).
nlohmann::json with_straggler_host(nlohmann::json reducer_stats, const nlohmann::json& ranks);

// Library versions this binary runs with (LibTorch, MPI, compiler; in a CUDA build the CUDA runtime,
// the driver's CUDA version where a driver is present, cuDNN and NCCL).
nlohmann::json runtime_versions();
// The training device: type and name; for a GPU also its product name, memory, compute capability.
nlohmann::json device_info(torch::Device device);

}  // namespace rx::worker
