#pragma once
#include "common/config/job_spec.h"

namespace rx::worker {

// Learning rate at `progress` epochs into training (fractional: epoch + step / steps_per_epoch), from
// the job's training section: optional linear warm-up from lr/10 over warmup_epochs, then
// constant, multi-step (x gamma at each milestone fraction of the epochs) or cosine to zero; the base
// lr is multiplied by the world size when scale_with_world is set (Goyal et al.'s linear scaling).
double learning_rate(const config::TrainingSpec& training, int world_size, double progress);

}  // namespace rx::worker
