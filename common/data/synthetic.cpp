// [Synthetic stand-in] Generated CIFAR-10-format data with a learnable signal; see dataset.h.
#include <algorithm>
#include <cmath>

#include "common/data/dataset.h"
#include "common/util/rng.h"

namespace rx::data {
namespace {

constexpr int kClasses = 10;
constexpr int kSide = 32;

struct Prototype {
  float base[3];  // per-channel base colour, [60, 196]
  float fx, fy;   // stripe frequency (cycles per image) along x and y
  float phase;
};

Prototype make_prototype(uint64_t seed, int k) {
  Rng rng(mix_seed({seed, 0x5EED, static_cast<uint64_t>(k)}));
  Prototype p{};
  for (float& b : p.base) b = 60.0f + 136.0f * static_cast<float>(rng.uniform());
  // Orientation differs per class (angle k * 18 degrees), so the signal survives flips and crops
  // only partially; colour alone already separates most classes.
  const double angle = 3.14159265358979 * k / kClasses;
  const double freq = 2.0 + (k % 3);
  p.fx = static_cast<float>(freq * std::cos(angle));
  p.fy = static_cast<float>(freq * std::sin(angle));
  p.phase = static_cast<float>(6.28318530717959 * rng.uniform());
  return p;
}

}  // namespace

Dataset make_synthetic_cifar10(int64_t count, uint64_t seed, Split split) {
  Dataset d;
  d.count = std::max<int64_t>(count, 0);
  d.channels = 3;
  d.height = d.width = kSide;
  d.num_classes = kClasses;
  d.source = "synthetic(seed=" + std::to_string(seed) + ")";
  d.pixels.resize(static_cast<size_t>(d.count * d.sample_bytes()));
  d.labels.resize(static_cast<size_t>(d.count));
  Prototype protos[kClasses];
  for (int k = 0; k < kClasses; ++k) protos[k] = make_prototype(seed, k);
  // Pattern table per class (shared by all its samples), then noise per sample.
  std::vector<float> pattern(static_cast<size_t>(kClasses) * kSide * kSide);
  for (int k = 0; k < kClasses; ++k)
    for (int y = 0; y < kSide; ++y)
      for (int x = 0; x < kSide; ++x)
        pattern[(k * kSide + y) * kSide + x] =
            50.0f *
            std::sin(6.28318530717959f * (protos[k].fx * x + protos[k].fy * y) / kSide + protos[k].phase);
  const uint64_t split_tag = split == Split::kTrain ? 1 : 2;
  for (int64_t i = 0; i < d.count; ++i) {
    const int k = static_cast<int>(i % kClasses);
    d.labels[i] = k;
    Rng rng(mix_seed({seed, split_tag, static_cast<uint64_t>(i)}));
    uint8_t* out = d.pixels.data() + i * d.sample_bytes();
    for (int c = 0; c < 3; ++c)
      for (int p = 0; p < kSide * kSide; ++p) {
        const float noise = static_cast<float>(rng.below(81)) - 40.0f;
        const float v = protos[k].base[c] + pattern[k * kSide * kSide + p] + noise;
        out[c * kSide * kSide + p] = static_cast<uint8_t>(std::clamp(v, 0.0f, 255.0f));
      }
  }
  return d;
}

void write_synthetic_cifar10(const std::string& dir, int64_t train_count, int64_t test_count, uint64_t seed) {
  write_cifar10(dir, make_synthetic_cifar10(train_count, seed, Split::kTrain),
                make_synthetic_cifar10(test_count, seed, Split::kTest));
}

}  // namespace rx::data
