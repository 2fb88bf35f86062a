#pragma once
// The architecture report behind `resnext_worker describe`: per-stage structure, shapes, parameters
// and MACs, all read off a built module and one forward pass (nothing comes from a table).
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/model/resnext_spec.h"

namespace rx::model {

struct StageReport {
  std::string name;  // "stem", "layer1", ..., "head"
  int blocks = 0;
  int groups = 0;              // cardinality of the grouped conv
  int channels_per_group = 0;  // d at this stage
  int bottleneck_width = 0;    // channels of the grouped conv
  int in_channels = 0;
  int out_channels = 0;
  int stride = 0;                   // of this stage alone
  int total_stride = 0;             // input size / output size
  std::vector<int64_t> output_hwc;  // H, W, C
  int64_t params = 0;
  int64_t macs = 0;
  std::string detection_verdict;
};

struct ArchitectureReport {
  std::string model;
  std::vector<int64_t> input_hwc;
  int num_classes = 0;
  std::vector<StageReport> stages;  // stem, stages..., head
  int64_t total_params = 0;
  int64_t total_macs = 0;
};

// Builds the model and measures it. Throws ConfigError for a bad spec or an input too small for it.
ArchitectureReport describe(const ResNeXtSpec& spec, int64_t height, int64_t width);

std::string to_table(const ArchitectureReport& report);
nlohmann::json to_json(const ArchitectureReport& report);

}  // namespace rx::model
