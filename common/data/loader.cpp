#include "common/data/loader.h"

#include <torch/cuda.h>

#include <algorithm>

#include "common/util/error.h"

namespace rx::data {
namespace {

constexpr int kMaxThreads = 256;
constexpr int kMaxPrefetch = 1024;

int64_t count_batches(int64_t n, const LoaderOptions& o) {
  return o.drop_last ? n / o.batch_size : (n + o.batch_size - 1) / o.batch_size;
}

const LoaderOptions& validated(const LoaderOptions& o) {
  validate(o);
  return o;
}

}  // namespace

void validate(const LoaderOptions& o) {
  if (o.batch_size <= 0)
    throw ConfigError("training.batch_size", "must be > 0, got " + std::to_string(o.batch_size));
  if (o.num_threads < 0 || o.num_threads > kMaxThreads)
    throw ConfigError("data.num_workers", "must be in [0, " + std::to_string(kMaxThreads) + "], got " +
                                              std::to_string(o.num_threads));
  if (o.prefetch < 1 || o.prefetch > kMaxPrefetch)
    throw ConfigError("data.prefetch", "must be in [1, " + std::to_string(kMaxPrefetch) + "], got " +
                                           std::to_string(o.prefetch));
}

Loader::Loader(const Dataset& data, std::vector<int64_t> indices, AugmentOptions aug, LoaderOptions opts)
    : data_(data),
      indices_(std::move(indices)),
      augmenter_(data, std::move(aug)),
      opts_(validated(opts)),
      num_batches_(count_batches(static_cast<int64_t>(indices_.size()), opts_)) {
  RX_CHECK(static_cast<int64_t>(data_.pixels.size()) == data_.count * data_.sample_bytes(),
           "pixel buffer of " << data_.source << " does not match its count");
  RX_CHECK(static_cast<int64_t>(data_.labels.size()) == data_.count,
           "label buffer of " << data_.source << " does not match its count");
  for (size_t i = 0; i < indices_.size(); ++i)
    if (indices_[i] < 0 || indices_[i] >= data_.count)
      throw DataError(data_.source, "loader index " + std::to_string(indices_[i]) + " at position " +
                                        std::to_string(i) + " outside the dataset's " +
                                        std::to_string(data_.count) + " samples");
  pin_ = opts_.pin_memory && torch::cuda::is_available();
  const int threads = static_cast<int>(std::min<int64_t>(opts_.num_threads, num_batches_));
  threads_.reserve(static_cast<size_t>(threads));
  try {
    for (int t = 0; t < threads; ++t) threads_.emplace_back([this] { worker_loop(); });
  } catch (...) {
    stop_and_join();  // a failed std::thread start must not leave the started ones running
    throw;
  }
}

Loader::~Loader() { stop_and_join(); }

void Loader::stop_and_join() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  space_cv_.notify_all();
  for (auto& t : threads_)
    if (t.joinable()) t.join();
  threads_.clear();
}

Batch Loader::build_batch(int64_t b) const {
  RX_CHECK(b >= 0 && b < num_batches_, "batch " << b << " of " << num_batches_);
  const int64_t begin = b * opts_.batch_size;
  const int64_t end = std::min<int64_t>(begin + opts_.batch_size, static_cast<int64_t>(indices_.size()));
  const int64_t n = end - begin;
  Batch batch;
  batch.labels = torch::empty({n}, torch::TensorOptions().dtype(torch::kInt64).pinned_memory(pin_));
  batch.indices.assign(indices_.begin() + begin, indices_.begin() + end);
  int64_t* labels = batch.labels.data_ptr<int64_t>();
  const uint8_t* pixels = data_.pixels.data();
  const int64_t sample_bytes = data_.sample_bytes();
  if (opts_.defer_augment) {  // [Device augment]: a copy and a draw per sample, no arithmetic
    const auto bytes = torch::TensorOptions().dtype(torch::kUInt8).pinned_memory(pin_);
    batch.pixels = torch::empty({n, data_.channels, data_.height, data_.width}, bytes);
    batch.transforms =
        torch::empty({n, kTransformFields}, torch::TensorOptions().dtype(torch::kInt32).pinned_memory(pin_));
    uint8_t* dst = batch.pixels.data_ptr<uint8_t>();
    int32_t* ts = batch.transforms.data_ptr<int32_t>();
    for (int64_t i = 0; i < n; ++i) {
      const int64_t idx = batch.indices[i];
      std::copy_n(pixels + idx * sample_bytes, sample_bytes, dst + i * sample_bytes);
      pack(augmenter_.draw(opts_.seed, opts_.epoch, idx), ts + i * kTransformFields);
      labels[i] = data_.labels[idx];
    }
    return batch;
  }
  const auto [c, h, w] = augmenter_.shape();
  auto options = torch::TensorOptions().dtype(torch::kFloat32).pinned_memory(pin_);
  batch.images =
      torch::empty({n, c, h, w}, options,
                   opts_.channels_last ? torch::MemoryFormat::ChannelsLast : torch::MemoryFormat::Contiguous);
  // Both memory formats keep each sample in one contiguous block of C*H*W floats (batch stride).
  float* images = batch.images.data_ptr<float>();
  const int64_t per_sample = augmenter_.output_size();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t idx = batch.indices[i];
    const SampleTransform t = augmenter_.draw(opts_.seed, opts_.epoch, idx);
    augmenter_.apply(pixels + idx * sample_bytes, t, images + i * per_sample, opts_.channels_last);
    labels[i] = data_.labels[idx];
  }
  return batch;
}

void Loader::worker_loop() {
  while (true) {
    int64_t b;
    {
      std::unique_lock<std::mutex> lock(mu_);
      space_cv_.wait(lock, [&] {
        return stop_ || next_claim_ >= num_batches_ || next_claim_ < next_out_ + opts_.prefetch;
      });
      if (stop_ || next_claim_ >= num_batches_) return;
      b = next_claim_++;
    }
    Result r;
    try {
      r.batch = build_batch(b);
    } catch (...) {
      r.error = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      results_.emplace(b, std::move(r));
    }
    ready_cv_.notify_all();
  }
}

std::optional<Batch> Loader::next() {
  if (failed_) std::rethrow_exception(failed_);
  if (next_out_ >= num_batches_) return std::nullopt;
  if (threads_.empty()) return build_batch(next_out_++);
  Result r;
  {
    std::unique_lock<std::mutex> lock(mu_);
    ready_cv_.wait(lock, [&] { return results_.count(next_out_) > 0; });
    auto it = results_.find(next_out_);
    r = std::move(it->second);
    results_.erase(it);
    ++next_out_;
    if (r.error) {
      failed_ = r.error;
      stop_ = true;  // no point building more
    }
  }
  space_cv_.notify_all();
  if (r.error) std::rethrow_exception(r.error);
  return std::move(r.batch);
}

}  // namespace rx::data
