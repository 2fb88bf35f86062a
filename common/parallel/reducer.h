#pragma once
// [Reducer] Bucketed gradient all-reduce that overlaps communication with backward, the design of
// PyTorch DDP's reducer rebuilt on our Communicator: parameters are grouped into buckets, each
// bucket owns one flat buffer that the parameters' .grad tensors alias, an autograd hook
// marks a gradient ready, and a bucket's all-reduce starts as soon as all its gradients are in,
// while backward goes on computing earlier layers. finalize() waits for what is still in flight.
//
// Use per optimizer step:  zero_grad(); for each micro-batch { forward; prepare_for_backward(last);
// backward; }  finalize(); optimizer.step().
#include <torch/nn.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/comm/communicator.h"
#include "common/config/job_spec.h"

namespace rx::parallel {

enum class Compression { kNone, kFp16, kBf16 };
Compression parse_compression(const std::string& name);  // "none"|"fp16"|"bf16", else ConfigError
const char* compression_name(Compression c);

// Every gradient slice of a bucket starts at a multiple of this many bytes ([Aligned slices]).
inline constexpr int64_t kSliceAlignBytes = 256;

struct ReducerOptions {
  double bucket_mb = 25;       // 0 = one bucket (one all-reduce) per parameter
  double first_bucket_mb = 1;  // cap of the first bucket (the last layers, ready first)
  Compression compression = Compression::kNone;
  comm::Millis timeout{300000};
};

// From the job's distributed section: bucket_mb / first_bucket_mb / compression / timeout_s.
ReducerOptions reducer_options(const config::DistributedSpec& distributed);

// [Bucket order] Buckets hold parameters in reverse registration order, which is roughly the order
// backward produces their gradients (the head first, the stem last). A bucket is closed once it
// holds at least its cap in bytes (first_mb for the first, bucket_mb for the others); bucket_mb 0
// gives one parameter per bucket. A dtype change also closes a bucket (one flat buffer per dtype).
// Pure function of the shapes, so every rank computes the same plan. Returns, per bucket, indices
// into `params` (registration order).
std::vector<std::vector<size_t>> plan_buckets(const std::vector<torch::Tensor>& params, double bucket_mb,
                                              double first_mb);

// [Bucket timing] One bucket's all-reduce in one synchronising step, for timelines: ready = its last
// gradient arrived, launched = its all-reduce was posted (after every earlier bucket's: [Launch
// order]), finished = the first moment the reducer saw its Work complete (a poll from a later ready
// hook or the wait in finalize(); MPI reports completion only when asked, so this is an upper bound).
struct BucketTiming {
  int64_t step = 0;  // synchronising steps finalized before this one, counted from construction
  size_t bucket = 0;
  int64_t bytes = 0;  // what went over the wire
  std::chrono::steady_clock::time_point ready, launched, finished;
};

class Reducer {
 public:
  // Trainable parameters of `module` (requires_grad) take part; their .grad become aliases of the
  // bucket buffers (existing gradients are copied in). Throws ConfigError naming
  // "distributed.compression" when compression is asked of a backend whose capabilities() do not
  // include the 16-bit wire type (mpi).
  Reducer(torch::nn::Module& module, comm::Communicator& comm, ReducerOptions opts);
  ~Reducer();
  Reducer(const Reducer&) = delete;
  Reducer& operator=(const Reducer&) = delete;

  // Zeroes every gradient with one fill per bucket (not one per parameter) and points each .grad back
  // at its alias: the step's zero_grad().
  void zero_grads();
  // Before each backward. `sync` false: a gradient-accumulation micro-batch, no communication
  // (like DDP's no_sync); true: this backward's gradients are reduced.
  void prepare_for_backward(bool sync);
  // [Graphed step] After prepare_for_backward(true) and a backward whose hooks did not run (a CUDA
  // graph's replay runs no autograd): marks every gradient ready, in bucket order, which launches
  // every bucket's all-reduce; finalize() follows as usual. No overlap with backward, by nature.
  void mark_all_ready();
  // After the synchronising backward: waits for every bucket, averages over ranks (in fp32).
  // Throws rx::Error naming every parameter that got no gradient.
  void finalize();

  // Collective (every rank, rarely: epoch end): all-gathers each rank's mean bucket-ready times
  // since the last call and names the straggler. Result in stats_json()["straggler"].
  void gather_arrivals();
  // Local: bucket layout, mean exposed ms per step, per-bucket means, last straggler result.
  nlohmann::json stats_json() const;

  // Called for every bucket at the end of each finalize(), in bucket order (optional; see [Bucket timing]).
  void set_observer(std::function<void(const BucketTiming&)> observer) { observer_ = std::move(observer); }

  // Per bucket, the parameters' names (tests, logs).
  std::vector<std::vector<std::string>> bucket_names() const;

 private:
  using Clock = std::chrono::steady_clock;
  struct Bucket;
  struct Param {
    std::string name;
    torch::Tensor tensor;
    size_t bucket = 0;
    int64_t offset = 0;        // into the bucket's buffer, in elements
    torch::Tensor grad_alias;  // the parameter's shape over the bucket's storage: what .grad is
    std::shared_ptr<torch::autograd::Node> accumulator;
    uintptr_t hook_key = 0;
  };

  void attach_grad_aliases();
  void on_grad_ready(size_t param_index);
  void launch_ready_buckets();
  void poll_in_flight();
  [[noreturn]] void throw_unused();

  comm::Communicator& comm_;
  ReducerOptions opts_;
  std::vector<Param> params_;
  std::vector<std::unique_ptr<Bucket>> buckets_;
  // Per-step state.
  bool sync_ = false;       // prepare_for_backward(true) was called and finalize() not yet
  size_t next_launch_ = 0;  // buckets launch strictly in order: 0, 1, 2, ...
  std::vector<std::shared_ptr<comm::Work>> previous_;  // last step's all-reduces ([Stream wait])
  size_t next_poll_ = 0;         // oldest bucket whose all-reduce may still be in flight
  std::vector<bool> ready_;      // per parameter, this step
  Clock::time_point reference_;  // end of the previous finalize(): arrival times count from here
  bool has_reference_ = false;
  // Statistics.
  int64_t steps_ = 0;
  double exposed_ms_total_ = 0;
  int64_t arrival_steps_ = 0;  // steps counted in the arrival window (since gather_arrivals)
  int64_t ready_steps_ = 0;    // steps with a measured ready time, whole run
  nlohmann::json straggler_;
  std::function<void(const BucketTiming&)> observer_;
};

}  // namespace rx::parallel
