#pragma once
// Shared helpers for the data tests: random datasets and whole-file bytes (the scratch folder is
// tests/support/temp_dir.h).
#include <fstream>
#include <string>
#include <vector>

#include "common/data/dataset.h"
#include "common/util/rng.h"
#include "tests/support/temp_dir.h"

namespace rx::data::test_util {

inline Dataset random_dataset(int64_t count, int channels, int height, int width, int num_classes,
                              uint64_t seed) {
  Dataset d;
  d.count = count;
  d.channels = channels;
  d.height = height;
  d.width = width;
  d.num_classes = num_classes;
  d.source = "random";
  Rng rng(seed);
  d.pixels.resize(static_cast<size_t>(count * d.sample_bytes()));
  for (auto& p : d.pixels) p = static_cast<uint8_t>(rng.below(256));
  for (int64_t i = 0; i < count; ++i) d.labels.push_back(static_cast<int32_t>(rng.below(num_classes)));
  return d;
}

inline std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

inline void write_bytes(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

}  // namespace rx::data::test_util
