#pragma once
// [Rank view] The per-rank and per-node figures a job's JSON shows, from a worker progress report's
// or run record's "ranks" array. Kept apart from job.cpp so the job JSON building stays one call.
#include <nlohmann/json.hpp>

namespace rx::coord {

// [{rank, host, local_rank, images_per_sec, peak_memory_bytes}]; fields a worker did not send are null,
// entries that are not objects are dropped.
nlohmann::json rank_entries(const nlohmann::json& ranks);
// The entries above grouped by host, in order of first appearance:
// [{host, ranks[], images_per_sec (sum), peak_memory_bytes (sum)}]. Empty when no rank names a host.
nlohmann::json node_entries(const nlohmann::json& rank_entries);

}  // namespace rx::coord
