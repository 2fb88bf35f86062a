#pragma once
// Preemption-safe checkpoints: model, optimizer, RNG state and the training cursor.
//
// [Checkpoint layout] <dir>/ckpt-<global step>.pt holds the tensors (a LibTorch archive: model
// parameters and buffers, optimizer state, the CPU RNG state); <dir>/ckpt-<global step>.json holds
// the cursor (epoch, position within the epoch's global sample order, world size, finished epochs'
// records) and the SHA-256 of the .pt file. Both are written atomically, .pt first, so a .json
// exists only for a complete .pt; a crash mid-write leaves at most a stray .tmp file. Loading
// verifies the checksum and falls back to the previous checkpoint when the newest is corrupt.
#include <torch/torch.h>

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "common/optim/weight_ema.h"

namespace rx::worker {

class CheckpointStore {
 public:
  CheckpointStore(std::string dir, int keep);

  // Writes checkpoint `global_step` (with the weight average, when there is one) and prunes all but
  // the newest `keep`. Rank 0 only.
  void save(int64_t global_step, torch::nn::Module& model, torch::optim::Optimizer& optimizer,
            const nlohmann::json& cursor, const optim::WeightEma* ema = nullptr);

  // Loads the newest checkpoint that verifies into model, optimizer (and ema) and returns its cursor;
  // nullopt when there is none. Corrupt or truncated ones are reported (spdlog) and skipped.
  std::optional<nlohmann::json> load_latest(torch::nn::Module& model, torch::optim::Optimizer& optimizer,
                                            optim::WeightEma* ema = nullptr);

  const std::string& dir() const { return dir_; }

 private:
  std::vector<int64_t> steps_newest_first() const;
  std::string pt_path(int64_t step) const;
  std::string json_path(int64_t step) const;

  std::string dir_;
  int keep_;
};

}  // namespace rx::worker
