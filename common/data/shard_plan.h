#pragma once
// Which sample indices rank r of world w reads in epoch e. The coordinator and every worker call this
// same function with the same inputs, so they agree on the plan without exchanging it.
#include <cstdint>
#include <string>
#include <vector>

namespace rx::data {

enum class ShardMode {
  // The coordinator's fixed partition: rank r owns the contiguous block r of ceil(N/w) indices
  // (the last block wraps to the dataset's start as padding), shuffled locally each epoch.
  kStatic,
  // DistributedSampler semantics: one permutation seeded by seed+epoch, padded by repeating its
  // head so every rank gets ceil(N/w), rank r takes positions r, r+w, r+2w, ...
  kGlobal,
};

// [Enum names] Every enum that has a text form pairs parse_X(text) with X_name(value) -> const char*
// (compression_name, reduce_op_name, phase_name, ...).
ShardMode parse_shard_mode(const std::string& name);  // "static" | "global"; ConfigError otherwise
const char* shard_mode_name(ShardMode mode);

struct ShardSpec {
  int64_t dataset_size = 0;
  int world_size = 1;
  int rank = 0;
  int64_t epoch = 0;
  uint64_t seed = 0;
  ShardMode mode = ShardMode::kGlobal;
  bool shuffle = true;  // false: static keeps its block order, global uses the identity permutation
  // [Resume cursor] Positions of the epoch's global order already consumed (by any world size) before
  // this plan starts: a run resumed mid-epoch continues exactly where the interrupted one stopped,
  // neither repeating nor skipping a sample. Global mode: any value; static mode: a multiple of
  // world_size (static blocks depend on the world size, so they resume only on the same one).
  int64_t start = 0;
};

// Samples per rank per epoch: ceil(N / w). Every rank gets the same count.
int64_t shard_length(int64_t dataset_size, int world_size);

// Samples per rank for the rest of an epoch that starts at position `start`: ceil((N - start) / w).
int64_t shard_length_from(int64_t dataset_size, int world_size, int64_t start);

// The indices for spec.rank. Throws ConfigError on N <= 0, w <= 0 or rank outside [0, w).
std::vector<int64_t> shard_indices(const ShardSpec& spec);

// The contiguous block [begin, end) that rank r owns under kStatic (before padding); the coordinator
// serves exactly these samples when it ships shard bytes to a worker.
struct Range {
  int64_t begin = 0;
  int64_t end = 0;
};
Range static_block(int64_t dataset_size, int world_size, int rank);

}  // namespace rx::data
