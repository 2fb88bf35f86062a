#pragma once
// Shared helpers for the data tests: a scratch directory and random datasets.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cctype>
#include <filesystem>
#include <fstream>
#include <string>

#include "common/data/dataset.h"
#include "common/util/rng.h"

namespace rx::data::test_util {

// A fresh directory under the system temp dir, removed on destruction.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    const std::string name = info ? std::string(info->test_suite_name()) + "." + info->name() : "data";
    std::string clean;
    for (char c : name) clean += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
    path_ = std::filesystem::temp_directory_path() / ("rx_data_" + std::to_string(::getpid()) + "_" + clean);
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string str() const { return path_.string(); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

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
