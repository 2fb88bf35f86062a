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

Format parse_format(const std::string& name) {
  if (name == "cifar10") return Format::kCifar10;
  if (name == "cifar100") return Format::kCifar100;
  if (name == "idx" || name == "fashion_mnist" || name == "mnist") return Format::kIdx;
  if (name == "synthetic") return Format::kSynthetic;
  throw ConfigError("data.format",
                    "unknown dataset format \"" + name + "\" (expected cifar10, cifar100, idx or synthetic)");
}

Dataset load_dataset(const std::string& format, const std::string& path, Split split) {
  switch (parse_format(format)) {
    case Format::kSynthetic:
      // [In-memory synthetic] An empty data.path generates the synthetic set instead of reading its
      // files: benchmarks and smoke tests then need no dataset on disk. Same seed everywhere, so every
      // rank holds the same samples.
      if (path.empty())
        return make_synthetic_cifar10(split == Split::kTrain ? kSyntheticTrain : kSyntheticTest,
                                      kSyntheticSeed, split);
      return read_cifar10(path, split);
    case Format::kCifar10:
      return read_cifar10(path, split);
    case Format::kCifar100:
      return read_cifar100(path, split);
    case Format::kIdx:
      return read_fashion_mnist(path, split);
  }
  throw ConfigError("data.format", "unhandled format \"" + format + "\"");
}

int64_t sample_count(const std::string& format, const std::string& path, Split split) {
  switch (parse_format(format)) {
    case Format::kSynthetic:
      if (path.empty()) return split == Split::kTrain ? kSyntheticTrain : kSyntheticTest;
      return count_cifar10(path, split);
    case Format::kCifar10:
      return count_cifar10(path, split);
    case Format::kCifar100:
      return count_cifar100(path, split);
    case Format::kIdx:
      return count_fashion_mnist(path, split);
  }
  throw ConfigError("data.format", "unhandled format \"" + format + "\"");
}

}  // namespace rx::data
