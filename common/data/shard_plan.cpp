#include "common/data/shard_plan.h"

#include <numeric>

#include "common/util/error.h"
#include "common/util/rng.h"

namespace rx::data {

ShardMode parse_shard_mode(const std::string& name) {
  if (name == "static") return ShardMode::kStatic;
  if (name == "global") return ShardMode::kGlobal;
  throw ConfigError("data.shard_mode", "must be \"static\" or \"global\", got \"" + name + "\"");
}

const char* shard_mode_name(ShardMode mode) { return mode == ShardMode::kStatic ? "static" : "global"; }

static void validate(int64_t n, int w, int rank) {
  if (n <= 0) throw ConfigError("dataset_size", "must be positive, got " + std::to_string(n));
  if (w <= 0) throw ConfigError("world_size", "must be positive, got " + std::to_string(w));
  if (rank < 0 || rank >= w)
    throw ConfigError("rank", "must be in [0, " + std::to_string(w) + "), got " + std::to_string(rank));
}

int64_t shard_length(int64_t dataset_size, int world_size) {
  validate(dataset_size, world_size, 0);
  return (dataset_size + world_size - 1) / world_size;
}

int64_t shard_length_from(int64_t dataset_size, int world_size, int64_t start) {
  validate(dataset_size, world_size, 0);
  if (start < 0) throw ConfigError("start", "must be >= 0, got " + std::to_string(start));
  const int64_t rest = std::max<int64_t>(0, dataset_size - start);
  return (rest + world_size - 1) / world_size;
}

Range static_block(int64_t dataset_size, int world_size, int rank) {
  validate(dataset_size, world_size, rank);
  const int64_t len = shard_length(dataset_size, world_size);
  const int64_t begin = std::min<int64_t>(dataset_size, rank * len);
  return {begin, std::min<int64_t>(dataset_size, begin + len)};
}

std::vector<int64_t> shard_indices(const ShardSpec& s) {
  validate(s.dataset_size, s.world_size, s.rank);
  const int64_t n = s.dataset_size;
  const int64_t len = shard_length(n, s.world_size);
  const int64_t rest = shard_length_from(n, s.world_size, s.start);
  if (s.mode == ShardMode::kStatic) {
    if (s.start % s.world_size != 0)
      throw ConfigError("data.shard_mode",
                        "static shards resume only on the world size that started the epoch");
    std::vector<int64_t> out(static_cast<size_t>(len));
    for (int64_t i = 0; i < len; ++i) out[i] = (s.rank * len + i) % n;
    if (s.shuffle) {
      Rng rng(mix_seed({s.seed, static_cast<uint64_t>(s.epoch), static_cast<uint64_t>(s.rank), 0x5747}));
      portable_shuffle(out.begin(), out.end(), rng);
    }
    out.erase(out.begin(), out.begin() + std::min<int64_t>(len, s.start / s.world_size));
    return out;
  }
  std::vector<int64_t> out(static_cast<size_t>(rest));
  std::vector<int64_t> perm(static_cast<size_t>(n));
  std::iota(perm.begin(), perm.end(), int64_t{0});
  if (s.shuffle) {
    Rng rng(mix_seed({s.seed + static_cast<uint64_t>(s.epoch), 0x61B}));
    portable_shuffle(perm.begin(), perm.end(), rng);
  }
  // Position p of the padded permutation is perm[p mod n] (padding repeats the head, as DDP does).
  for (int64_t i = 0; i < rest; ++i) out[i] = perm[(s.start + s.rank + i * s.world_size) % n];
  return out;
}

}  // namespace rx::data
