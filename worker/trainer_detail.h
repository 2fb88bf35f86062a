#pragma once
// Helpers shared by trainer.cpp and trainer_report.cpp (not part of the worker's interface).
#include <nlohmann/json.hpp>

#include "common/data/augment.h"

namespace rx::worker::detail {

double now_seconds();  // steady clock, in seconds
// The loader's augmentation options from the resolved config's data section.
data::AugmentOptions augment_options(const nlohmann::json& data_section, bool train);

}  // namespace rx::worker::detail
