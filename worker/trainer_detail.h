#pragma once
// Helpers shared by trainer.cpp, trainer_setup.cpp and trainer_report.cpp (not part of the worker's
// interface).
#include <nlohmann/json.hpp>

#include "common/data/augment.h"
#include "common/parallel/reducer.h"
#include "worker/trainer.h"

namespace rx::worker::detail {

double now_seconds();  // steady clock, in seconds
// The loader's augmentation options from the job's data section.
data::AugmentOptions augment_options(const config::DataSpec& data, bool train);

}  // namespace rx::worker::detail

namespace rx::worker {

// [Gradient sync] Bucketed all-reduce overlapped with backward (common/parallel/reducer.h).
struct Trainer::GradSync {
  GradSync(torch::nn::Module& m, comm::Communicator& c, const config::DistributedSpec& d)
      : reducer(m, c, parallel::reducer_options(d)) {}
  parallel::Reducer reducer;
};

}  // namespace rx::worker
