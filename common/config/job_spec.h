#pragma once
// [Job spec] The job config as typed structs, one per section of the schema (common/config/schema.cpp).
// A JobSpec is built once, by from_json(), after resolve() has checked and completed the document, and
// everything downstream (worker, reducer, loader, LR schedule, checkpoints) reads its fields instead of
// looking keys up in JSON: a mistyped key is then a compile error, and every bad value has already been
// reported as a ConfigError naming its dotted key. to_json() gives back the resolved document byte for
// byte, so the run record's config and its SHA-256 are those of resolve() ([Number spelling]).
#include <array>
#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/config/job_config.h"
#include "common/model/resnext_spec.h"

namespace rx::config {

// model.*: a preset, or depth/cardinality/base_width (null = not given).
struct ModelSpec {
  std::optional<std::string> preset;
  std::optional<int> depth, cardinality, base_width;
  int bottleneck_width = 0;
  std::optional<int> stem_channels, base_planes;
  int num_classes = 10;
  bool zero_init_residual = false;
  bool fused_bn_relu = false;  // [Fused BN-ReLU]
  std::string pretrained;      // torchvision state_dict to start from; "" = none
  bool replace_head = false;
};

// data.augment.*
struct AugmentSpec {
  int crop_padding = 4;
  bool flip = true;
  std::vector<double> mean, std;
  int resize = 0;
  int pad_to = 0;
  int replicate_channels = 0;
  double erasing = 0;  // [Random erasing] in common/data/augment.h
  std::array<double, 2> erasing_scale{0.02, 0.4};
  std::array<double, 2> erasing_ratio{0.3, 3.3};
  bool on_device = false;  // [Device augment] in common/data/device_augment.h
};

enum class DataSource { kShared, kCoordinator };

// data.*
struct DataSpec {
  std::string format;  // cifar10 | cifar100 | idx | synthetic (data::load_dataset's names)
  std::string path;    // "" only for synthetic
  DataSource source = DataSource::kShared;
  std::string shard_mode;  // static | global (data::parse_shard_mode)
  int64_t max_train_samples = 0;
  int64_t max_test_samples = 0;
  int num_workers = 1;
  int prefetch = 4;
  bool channels_last = false;
  AugmentSpec augment;
};

enum class OptimizerKind { kSgd, kAdam, kAdamW };

// training.optimizer.*
struct OptimizerSpec {
  OptimizerKind name = OptimizerKind::kSgd;
  double lr = 0.1;
  double momentum = 0.9;
  bool nesterov = true;
  double weight_decay = 5e-4;
  bool fused = true;
  std::array<double, 2> betas{0.9, 0.999};
  double eps = 1e-8;
};

enum class DeviceChoice { kAuto, kCpu, kCuda };

enum class LrScheduleKind { kConstant, kMultistep, kCosine };

// training.lr_schedule.*
struct LrScheduleSpec {
  LrScheduleKind name = LrScheduleKind::kMultistep;
  std::vector<double> milestones;  // fractions of training.epochs, strictly increasing
  double gamma = 0.1;
  double warmup_epochs = 0;
  bool scale_with_world = false;
};

// training.*
struct TrainingSpec {
  int epochs = 1;
  int64_t batch_size = 64;  // per rank
  uint64_t seed = 1;
  int64_t max_steps_per_epoch = 0;
  OptimizerSpec optimizer;
  LrScheduleSpec lr_schedule;
  double label_smoothing = 0;
  double ema_decay = 0;  // [Weight EMA] in common/optim/weight_ema.h; 0 = off
  int accumulate_steps = 1;
  int eval_every_epochs = 1;
  int64_t log_every_steps = 20;
  DeviceChoice device = DeviceChoice::kAuto;
  std::string precision;  // fp32 | bf16 | fp16 (model::parse_precision)
  bool cudnn_benchmark = true;
  bool cudnn_deterministic = false;  // with cudnn_benchmark false: the same bits run to run
  bool cuda_graph = false;           // [Graphed step] in worker/step_graph.h
  int threads = 0;
};

// distributed.*
struct DistributedSpec {
  std::string backend;  // auto | mpi | nccl (comm::make_communicator)
  double bucket_mb = 25;
  double first_bucket_mb = 1;
  std::string compression;  // none | fp16 | bf16 (parallel::parse_compression)
  double timeout_s = 300;
  double hang_timeout_s = 60;
  std::chrono::milliseconds timeout() const {
    return std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  }
};

// report.*
struct ReportSpec {
  double retry_s = 300;
};

enum class ResumeMode { kNone, kAuto };

// checkpoint.*
struct CheckpointSpec {
  int64_t every_steps = 0;
  int64_t every_epochs = 1;
  int keep = 3;
  ResumeMode resume = ResumeMode::kNone;
};

// output.*
struct OutputSpec {
  std::string dir;
  bool trace = false;  // per-rank Chrome trace, merged into trace.json ([Trace timeline])
};

struct JobSpec {
  std::string name;
  ModelSpec model;
  DataSpec data;
  TrainingSpec training;
  DistributedSpec distributed;
  ReportSpec report;
  CheckpointSpec checkpoint;
  OutputSpec output;
  // [Number spelling] JSON tells 300 from 300.0 and so does the canonical dump the hash is taken of;
  // a number key (or "key[i]" list element) written as an integer is remembered here so that
  // to_json() writes it back the same way. Maintained by from_json(); no caller needs to touch it.
  std::set<std::string> integer_spelled;
};

// Resolves `config` (user or already resolved: resolve() is idempotent) and reads it into a JobSpec.
// Every problem is a ConfigError naming the dotted key.
JobSpec from_json(const nlohmann::json& config, const std::vector<Override>& overrides = {});
// resolve_file() into a JobSpec.
JobSpec from_file(const std::string& path, const std::vector<Override>& overrides = {});

// The resolved document, identical (same dump, same hash) to resolve()'s for the config the spec was
// read from.
nlohmann::json to_json(const JobSpec& spec);
// The model section alone, as the run record shows it.
nlohmann::json model_json(const JobSpec& spec);

std::string config_hash(const JobSpec& spec);
model::ResNeXtSpec model_spec(const JobSpec& spec);

}  // namespace rx::config
