#pragma once
// [Portable RNG] Shard plans and augmentation must be identical on every rank, in the coordinator and
// across standard libraries, so we do not use std::shuffle or std::uniform_int_distribution (their
// output is implementation-defined). SplitMix64 seeds a xoshiro256** generator; bounded integers use
// rejection sampling so there is no modulo bias.
#include <cstdint>
#include <initializer_list>

namespace rx {

inline uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// Mixes several 64-bit values (seed, epoch, rank, ...) into one seed.
inline uint64_t mix_seed(std::initializer_list<uint64_t> parts) {
  uint64_t state = 0x6A09E667F3BCC909ULL;
  uint64_t out = 0;
  for (uint64_t p : parts) {
    state ^= p;
    out = splitmix64(state);
  }
  return out;
}

class Rng {
 public:
  explicit Rng(uint64_t seed) {
    uint64_t st = seed;
    for (auto& w : s_) w = splitmix64(st);
  }
  uint64_t next() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }
  // Uniform in [0, bound), bound > 0.
  uint64_t below(uint64_t bound) {
    const uint64_t limit = UINT64_MAX - (UINT64_MAX % bound);
    uint64_t x;
    do {
      x = next();
    } while (x >= limit);
    return x % bound;
  }
  // Uniform in [0, 1).
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  bool coin() { return (next() >> 63) != 0; }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
};

// Fisher-Yates shuffle of any random-access range with the portable generator.
template <typename It>
void portable_shuffle(It first, It last, Rng& rng) {
  const auto n = static_cast<uint64_t>(last - first);
  for (uint64_t i = n; i > 1; --i) {
    const uint64_t j = rng.below(i);
    std::swap(first[i - 1], first[j]);
  }
}

}  // namespace rx
