#include "common/data/dataset.h"

#include <algorithm>

#include "common/util/error.h"

namespace rx::data {

const uint8_t* Dataset::sample(int64_t i) const {
  RX_CHECK(i >= 0 && i < count, "sample " << i << " of " << count << " in " << source);
  return pixels.data() + i * sample_bytes();
}

Dataset Dataset::take_first(int64_t n) const {
  Dataset d = *this;
  if (n <= 0 || n >= count) return d;
  d.count = n;
  d.pixels.resize(static_cast<size_t>(n * sample_bytes()));
  d.pixels.shrink_to_fit();
  d.labels.resize(static_cast<size_t>(n));
  d.labels.shrink_to_fit();
  return d;
}

Dataset load_dataset(const std::string& format, const std::string& path, Split split) {
  // [In-memory synthetic] An empty data.path generates the synthetic set instead of reading its files:
  // benchmarks and smoke tests then need no dataset on disk. Same seed everywhere, so every rank holds
  // the same samples.
  if (format == "synthetic" && path.empty())
    return make_synthetic_cifar10(split == Split::kTrain ? kSyntheticTrain : kSyntheticTest, kSyntheticSeed,
                                  split);
  if (format == "cifar10" || format == "synthetic") return read_cifar10(path, split);
  if (format == "cifar100") return read_cifar100(path, split);
  if (format == "idx" || format == "fashion_mnist" || format == "mnist")
    return read_fashion_mnist(path, split);
  throw ConfigError("data.format", "unknown dataset format \"" + format +
                                       "\" (expected cifar10, cifar100, idx or synthetic)");
}

}  // namespace rx::data
