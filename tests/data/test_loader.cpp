// The background batch loader: content, ordering, determinism, shutdown and option validation.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>

#include "common/data/loader.h"
#include "common/data/shard_plan.h"
#include "common/util/error.h"
#include "data_test_util.h"

using namespace rx::data;

namespace {

const Dataset& synthetic() {
  static const Dataset d = make_synthetic_cifar10(1000, 11, Split::kTrain);
  return d;
}

std::vector<int64_t> plan(int64_t epoch, int rank = 0) {
  ShardSpec s;
  s.dataset_size = synthetic().count;
  s.world_size = 2;
  s.rank = rank;
  s.epoch = epoch;
  s.seed = 5;
  return shard_indices(s);
}

std::vector<Batch> drain(Loader& loader) {
  std::vector<Batch> out;
  while (auto b = loader.next()) out.push_back(std::move(*b));
  return out;
}

std::vector<Batch> run_epoch(int64_t epoch, LoaderOptions o, AugmentOptions a = {}) {
  o.epoch = epoch;
  Loader loader(synthetic(), plan(epoch), a, o);
  return drain(loader);
}

bool same(const std::vector<Batch>& a, const std::vector<Batch>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (!torch::equal(a[i].images, b[i].images) || !torch::equal(a[i].labels, b[i].labels) ||
        a[i].indices != b[i].indices)
      return false;
  return true;
}

// Threads of this process, from /proc (Linux).
int thread_count() {
  std::ifstream f("/proc/self/status");
  std::string key;
  while (f >> key)
    if (key == "Threads:") {
      int n = 0;
      f >> n;
      return n;
    }
  return -1;
}

}  // namespace

TEST(Loader, BatchesFollowIndicesAndMatchAugmenter) {
  LoaderOptions o;
  o.batch_size = 64;
  o.seed = 9;
  o.epoch = 2;
  const auto indices = plan(2);
  ASSERT_EQ(indices.size(), 500u);
  Loader loader(synthetic(), indices, AugmentOptions{}, o);
  EXPECT_EQ(loader.num_batches(), 8);  // 7 full + 52
  const Augmenter aug(synthetic(), AugmentOptions{});
  std::vector<float> expect(static_cast<size_t>(aug.output_size()));
  int64_t pos = 0, batches = 0;
  while (auto b = loader.next()) {
    ++batches;
    const int64_t n = b->images.size(0);
    EXPECT_EQ(n, pos + 64 <= 500 ? 64 : 500 - pos);
    EXPECT_EQ(b->images.sizes(), (std::vector<int64_t>{n, 3, 32, 32}));
    EXPECT_EQ(b->images.dtype(), torch::kFloat32);
    EXPECT_TRUE(b->images.is_contiguous());
    EXPECT_EQ(b->labels.dtype(), torch::kInt64);
    ASSERT_EQ(b->indices, std::vector<int64_t>(indices.begin() + pos, indices.begin() + pos + n));
    for (int64_t i = 0; i < n; ++i) {
      const int64_t idx = b->indices[i];
      ASSERT_EQ(b->labels[i].item<int64_t>(), synthetic().labels[idx]);
      aug.apply(synthetic().sample(idx), aug.draw(9, 2, idx), expect.data(), false);
      ASSERT_TRUE(torch::equal(b->images[i], torch::from_blob(expect.data(), {3, 32, 32})))
          << "sample " << idx;
    }
    pos += n;
  }
  EXPECT_EQ(batches, 8);
  EXPECT_EQ(pos, 500);
  EXPECT_FALSE(loader.next().has_value()) << "end of epoch stays at end";
}

TEST(Loader, DeterministicAcrossRunsThreadsAndPrefetch) {
  LoaderOptions o;
  o.batch_size = 50;
  o.seed = 3;
  const auto ref = run_epoch(1, o);
  ASSERT_EQ(ref.size(), 10u);
  EXPECT_TRUE(same(ref, run_epoch(1, o))) << "same seed/epoch must give identical batches";
  LoaderOptions many = o;
  many.num_threads = 3;
  many.prefetch = 1;
  EXPECT_TRUE(same(ref, run_epoch(1, many))) << "thread count and prefetch must not change content";
  LoaderOptions inline_opts = o;
  inline_opts.num_threads = 0;
  EXPECT_TRUE(same(ref, run_epoch(1, inline_opts)));
  // Different epoch: different order (shard plan) and different augmentation of the same sample.
  EXPECT_FALSE(same(ref, run_epoch(2, o)));
  Loader a(synthetic(), {0, 1, 2, 3}, AugmentOptions{}, o);
  LoaderOptions next_epoch = o;
  next_epoch.epoch = 2;
  Loader b(synthetic(), {0, 1, 2, 3}, AugmentOptions{}, next_epoch);
  EXPECT_FALSE(torch::equal(a.next()->images, b.next()->images));
}

TEST(Loader, SampleAugmentationIndependentOfRankAndPosition) {
  // Sample 7 placed in different batches/positions (as on different ranks) is augmented identically.
  LoaderOptions o;
  o.batch_size = 4;
  o.seed = 1;
  Loader a(synthetic(), {7, 1, 2, 3}, AugmentOptions{}, o);
  Loader b(synthetic(), {4, 5, 6, 8, 9, 10, 7}, AugmentOptions{}, o);
  const auto first = a.next()->images[0];
  b.next();
  EXPECT_TRUE(torch::equal(first, b.next()->images[2]));
}

TEST(Loader, DropLastAndEmpty) {
  LoaderOptions o;
  o.batch_size = 64;
  o.drop_last = true;
  Loader loader(synthetic(), plan(0), AugmentOptions{}, o);
  EXPECT_EQ(loader.num_batches(), 7);
  const auto all = drain(loader);
  ASSERT_EQ(all.size(), 7u);
  for (const auto& b : all) EXPECT_EQ(b.images.size(0), 64);
  Loader empty(synthetic(), {}, AugmentOptions{}, o);
  EXPECT_EQ(empty.num_batches(), 0);
  EXPECT_FALSE(empty.next().has_value());
}

TEST(Loader, ChannelsLastHasSameValues) {
  LoaderOptions o;
  o.batch_size = 32;
  const auto ref = run_epoch(0, o);
  o.channels_last = true;
  const auto cl = run_epoch(0, o);
  ASSERT_EQ(ref.size(), cl.size());
  for (size_t i = 0; i < ref.size(); ++i) {
    EXPECT_TRUE(cl[i].images.is_contiguous(torch::MemoryFormat::ChannelsLast));
    EXPECT_TRUE(torch::equal(ref[i].images, cl[i].images));
  }
}

TEST(Loader, GreyPaddedReplicatedAndResized) {
  Dataset grey = test_util::random_dataset(20, 1, 28, 28, 10, 4);
  AugmentOptions a;
  a.pad_to = 32;
  a.replicate_channels = 3;
  a.resize = 64;
  LoaderOptions o;
  o.batch_size = 8;
  Loader loader(grey, {0, 5, 9, 1, 2, 3, 4, 6, 7, 8}, a, o);
  const auto b = loader.next();
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->images.sizes(), (std::vector<int64_t>{8, 3, 64, 64}));
  EXPECT_TRUE(torch::isfinite(b->images).all().item<bool>());
}

TEST(Loader, DestroyMidEpochJoinsAllThreads) {
  LoaderOptions o;
  o.batch_size = 4;  // 125 batches
  o.num_threads = 3;
  o.prefetch = 2;
  { Loader warm(synthetic(), plan(0), AugmentOptions{}, o); }  // lets torch create any lazy threads
  const int before = thread_count();
  ASSERT_GT(before, 0);
  for (int round = 0; round < 20; ++round) {
    Loader loader(synthetic(), plan(round), AugmentOptions{}, o);
    ASSERT_GT(loader.num_batches(), 100);
    if (round % 2 == 0) {  // odd rounds: destroy before any next()
      ASSERT_TRUE(loader.next().has_value());
    }
  }
  EXPECT_EQ(thread_count(), before) << "a worker thread outlived its loader";
}

TEST(Loader, InvalidOptionsNameTheConfigField) {
  const auto field_of = [](AugmentOptions a, LoaderOptions o) -> std::string {
    try {
      Loader loader(synthetic(), {0, 1}, a, o);
    } catch (const rx::ConfigError& e) {
      return e.field();
    }
    return "(no error)";
  };
  LoaderOptions o;
  EXPECT_EQ(field_of({}, o), "(no error)");
  o.batch_size = 0;
  EXPECT_EQ(field_of({}, o), "training.batch_size");
  o = {};
  o.num_threads = -1;
  EXPECT_EQ(field_of({}, o), "data.num_workers");
  o = {};
  o.prefetch = 0;
  EXPECT_EQ(field_of({}, o), "data.prefetch");
  AugmentOptions a;
  a.mean = {0.1f, 0.2f};
  EXPECT_EQ(field_of(a, {}), "data.augment.mean");
  a = {};
  a.std = {-1.0f};
  EXPECT_EQ(field_of(a, {}), "data.augment.std");
  a = {};
  a.crop_padding = 100;
  EXPECT_EQ(field_of(a, {}), "data.augment.crop_padding");
  EXPECT_THROW(Loader(synthetic(), {0, 1000}, AugmentOptions{}, LoaderOptions{}), rx::DataError);
  EXPECT_THROW(Loader(synthetic(), {-1}, AugmentOptions{}, LoaderOptions{}), rx::DataError);
}
