#pragma once
// Background batch assembly: worker threads build whole batches ([B, C, H, W] float, one tensor per
// batch) ahead of the training loop, bounded by `prefetch`.
//
// [Ordering] Batch b holds indices[b*B, (b+1)*B) and batches come out in order b = 0, 1, ... whatever
// thread built them. With the per-sample RNG of augment.h, a batch's content is a pure function of
// (data, indices, options, seed, epoch): identical across runs, thread counts and prefetch depths.
//
// [Bounded queue] A worker claims batch b only while b < consumed + prefetch, so at most `prefetch`
// batches are built or waiting at any time (memory is bounded even if the consumer stalls).
//
// [Shutdown] The destructor sets a stop flag, wakes every thread and joins them. A worker finishes
// at most the batch it is building (no partial state escapes), so destroying a loader mid-epoch
// neither hangs nor leaks a thread. The Dataset is NOT copied: it must outlive the Loader.
#include <torch/torch.h>

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "common/data/augment.h"
#include "common/data/dataset.h"

namespace rx::data {

struct Batch {
  torch::Tensor images;  // float [B, C, H, W] (channels-last memory format when requested)
  torch::Tensor labels;  // int64 [B]
  std::vector<int64_t> indices;
  // With LoaderOptions::defer_augment, `images` is left undefined and these hold what the
  // DeviceAugmenter needs: uint8 [B, C, H, W] as stored, and int32 [B, kTransformFields].
  torch::Tensor pixels, transforms;
};

struct LoaderOptions {
  int64_t batch_size = 64;
  bool drop_last = false;
  int num_threads = 1;  // 0 = build batches synchronously inside next() (debugging)
  int prefetch = 4;     // batches built ahead, >= 1
  bool channels_last = false;
  bool pin_memory = false;  // honoured only when CUDA is available
  // [Device augment] Batches carry pixels and transforms, not images (data.augment.on_device).
  bool defer_augment = false;
  uint64_t seed = 0;
  int64_t epoch = 0;
};

// Throws ConfigError("training.batch_size" | "data.num_workers" | "data.prefetch").
void validate(const LoaderOptions& o);

class Loader {
 public:
  // indices: the sample order for this epoch (e.g. from shard_indices). Batches come in that order.
  // Validates options (ConfigError) and indices (DataError on an index outside the dataset).
  Loader(const Dataset& data, std::vector<int64_t> indices, AugmentOptions aug, LoaderOptions opts);
  ~Loader();  // stops and joins worker threads, even mid-epoch
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  std::optional<Batch> next();  // nullopt at end of epoch; rethrows a worker thread's exception
  int64_t num_batches() const { return num_batches_; }
  std::array<int64_t, 3> sample_shape() const { return augmenter_.shape(); }
  const Augmenter& augmenter() const { return augmenter_; }

  // Builds batch b on the calling thread (what the workers run); exposed for tests and tools.
  Batch build_batch(int64_t b) const;

 private:
  struct Result {
    std::optional<Batch> batch;
    std::exception_ptr error;
  };
  void worker_loop();
  void stop_and_join();

  const Dataset& data_;
  const std::vector<int64_t> indices_;
  const Augmenter augmenter_;
  const LoaderOptions opts_;
  const int64_t num_batches_;
  bool pin_ = false;

  std::mutex mu_;
  std::condition_variable ready_cv_;  // a result was stored
  std::condition_variable space_cv_;  // a batch was consumed, or stop
  int64_t next_claim_ = 0;            // next batch a worker will build
  int64_t next_out_ = 0;              // next batch next() returns
  std::map<int64_t, Result> results_;
  std::exception_ptr failed_;  // sticky: once a batch failed, next() keeps rethrowing
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace rx::data
