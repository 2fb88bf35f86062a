#include "common/config/schema.h"

namespace rx::config {

using J = nlohmann::json;

const std::vector<Field>& schema() {
  static const std::vector<Field> fields = {
      {"name", Kind::kString, "", 0, 0, {}, false, "job name"},
      // model: either a preset, or depth/cardinality/base_width (CIFAR ResNeXt, depth = 9n+2)
      {"model.preset", Kind::kString, nullptr, 0, 0, {}, true, "named preset (see describe --list)"},
      {"model.depth", Kind::kInt, nullptr, 11, 1001, {}, true},
      {"model.cardinality", Kind::kInt, nullptr, 1, 4096, {}, true},
      {"model.base_width", Kind::kInt, nullptr, 1, 4096, {}, true},
      {"model.bottleneck_width", Kind::kInt, 0, 0, 1 << 20, {}, false, "total width of stage 1 (0 = from base_width)"},
      {"model.stem_channels", Kind::kInt, nullptr, 1, 4096, {}, true},
      {"model.base_planes", Kind::kInt, nullptr, 1, 4096, {}, true},
      {"model.num_classes", Kind::kInt, 10, 1, 1000000},
      {"model.zero_init_residual", Kind::kBool, false},
      {"model.pretrained", Kind::kString, "", 0, 0, {}, false, "torchvision state_dict to start from"},
      {"model.replace_head", Kind::kBool, false, 0, 0, {}, false, "skip fc.* when loading pretrained"},
      // data
      {"data.format", Kind::kString, nullptr, 0, 0, {"cifar10", "cifar100", "idx", "synthetic"}, false},
      {"data.path", Kind::kString, nullptr, 0, 0, {}, false},
      {"data.source", Kind::kString, "shared", 0, 0, {"shared", "coordinator"}},
      {"data.shard_mode", Kind::kString, "global", 0, 0, {"static", "global"}},
      {"data.max_train_samples", Kind::kInt, 0, 0, 1e12},
      {"data.max_test_samples", Kind::kInt, 0, 0, 1e12},
      {"data.num_workers", Kind::kInt, 1, 1, 64},
      {"data.prefetch", Kind::kInt, 4, 1, 256},
      {"data.channels_last", Kind::kBool, false, 0, 0, {}, false,
       "input batches and the model's 4-D weights in channels-last (NHWC) memory"},
      {"data.augment.crop_padding", Kind::kInt, 4, 0, 64},
      {"data.augment.flip", Kind::kBool, true},
      {"data.augment.mean", Kind::kNumberList, J{0.4914, 0.4822, 0.4465}, -1e6, 1e6},
      {"data.augment.std", Kind::kNumberList, J{0.2470, 0.2435, 0.2616}, 1e-12, 1e6},
      {"data.augment.resize", Kind::kInt, 0, 0, 4096},
      {"data.augment.pad_to", Kind::kInt, 0, 0, 4096},
      {"data.augment.replicate_channels", Kind::kInt, 0, 0, 3},
      // training
      {"training.epochs", Kind::kInt, 1, 1, 100000},
      {"training.batch_size", Kind::kInt, 64, 1, 65536, {}, false, "per rank"},
      {"training.seed", Kind::kInt, 1, 0, 9.0e15},
      {"training.max_steps_per_epoch", Kind::kInt, 0, 0, 1e12, {}, false, "0 = whole shard"},
      {"training.optimizer.name", Kind::kString, "sgd", 0, 0, {"sgd", "adam", "adamw"}},
      {"training.optimizer.lr", Kind::kNumber, 0.1, 1e-12, 100},
      {"training.optimizer.momentum", Kind::kNumber, 0.9, 0, 0.9999},
      {"training.optimizer.nesterov", Kind::kBool, true},
      {"training.optimizer.weight_decay", Kind::kNumber, 5e-4, 0, 1},
      {"training.optimizer.fused", Kind::kBool, true, 0, 0, {}, false,
       "sgd: update the gradient buckets' flat buffers at once (same results as per parameter)"},
      {"training.optimizer.betas", Kind::kNumberList, J{0.9, 0.999}, 0, 0.999999},
      {"training.optimizer.eps", Kind::kNumber, 1e-8, 1e-16, 1},
      {"training.lr_schedule.name", Kind::kString, "multistep", 0, 0, {"constant", "multistep", "cosine"}},
      {"training.lr_schedule.milestones", Kind::kNumberList, J{0.5, 0.75}, 1e-9, 0.999999999, {}, false,
       "fractions of training.epochs"},
      {"training.lr_schedule.gamma", Kind::kNumber, 0.1, 1e-9, 1},
      {"training.lr_schedule.warmup_epochs", Kind::kNumber, 0, 0, 100000},
      {"training.lr_schedule.scale_with_world", Kind::kBool, false, 0, 0, {}, false, "linear scaling rule"},
      {"training.label_smoothing", Kind::kNumber, 0.0, 0, 0.999},
      {"training.accumulate_steps", Kind::kInt, 1, 1, 1024},
      {"training.eval_every_epochs", Kind::kInt, 1, 0, 100000, {}, false, "0 = only at the end"},
      {"training.log_every_steps", Kind::kInt, 20, 1, 1e9},
      {"training.device", Kind::kString, "auto", 0, 0, {"auto", "cpu", "cuda"}, false,
       "auto = cuda:<local rank mod GPUs> when a CUDA build sees a GPU, else cpu"},
      {"training.precision", Kind::kString, "fp32", 0, 0, {"fp32", "bf16", "fp16"}, false,
       "forward under autocast; fp16 (CUDA only) with a dynamic loss scale; weights stay fp32"},
      {"training.cudnn_benchmark", Kind::kBool, true, 0, 0, {}, false, "cuDNN autotuning (CUDA only)"},
      {"training.threads", Kind::kInt, 0, 0, 1024, {}, false, "intra-op threads per rank; 0 = cores / local ranks"},
      // distributed
      {"distributed.backend", Kind::kString, "auto", 0, 0, {"auto", "mpi", "nccl"}},
      {"distributed.bucket_mb", Kind::kNumber, 25, 0, 4096, {}, false, "0 = one all-reduce per parameter"},
      {"distributed.first_bucket_mb", Kind::kNumber, 1, 0, 4096},
      {"distributed.compression", Kind::kString, "none", 0, 0, {"none", "fp16", "bf16"}},
      {"distributed.timeout_s", Kind::kNumber, 300, 0.001, 86400},
      {"distributed.hang_timeout_s", Kind::kNumber, 60, 0, 86400, {}, false,
       "a collective not done after this long gets a hang report naming the missing ranks; 0 = off; < timeout_s"},
      {"report.retry_s", Kind::kNumber, 300, 0, 86400, {}, false,
       "how long the worker retries its result report to the coordinator (exponential backoff)"},
      // checkpoint (see worker/checkpoint.h)
      {"checkpoint.every_steps", Kind::kInt, 0, 0, 1e12, {}, false, "0 = off"},
      {"checkpoint.every_epochs", Kind::kInt, 1, 0, 100000, {}, false, "0 = off"},
      {"checkpoint.keep", Kind::kInt, 3, 1, 1000},
      {"checkpoint.resume", Kind::kString, "none", 0, 0, {"none", "auto"}},
      // output
      {"output.dir", Kind::kString, "runs/latest"},
      {"output.trace", Kind::kBool, false, 0, 0, {}, false,
       "Chrome trace-event timeline (step phases, bucket all-reduces) per rank, merged into trace.json"},
  };
  return fields;
}

const Field* find_field(const std::string& key) {
  for (const auto& f : schema())
    if (f.key == key) return &f;
  return nullptr;
}

}  // namespace rx::config
