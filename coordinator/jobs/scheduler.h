#pragma once
// [Scheduler] Strict FIFO over N slots (one slot = one rank). The head of the queue starts as soon as
// enough slots are free; jobs behind it wait even if they would fit (no backfill), so a big job is
// never starved by a stream of small ones. Pure functions so tests exercise them without processes.
#include <string>
#include <vector>

namespace rx::coord {

struct QueuedJob {
  std::string id;
  int ranks = 1;
};

// The jobs (prefix of `queue`, in order) to start now given `free_slots`.
std::vector<std::string> pick_fifo(const std::vector<QueuedJob>& queue, int free_slots);

// A job can ever run iff 1 <= ranks <= total_slots.
bool fits_capacity(int ranks, int total_slots);

}  // namespace rx::coord
