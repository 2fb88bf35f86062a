#include "coordinator/jobs/scheduler.h"

namespace rx::coord {

std::vector<std::string> pick_fifo(const std::vector<QueuedJob>& queue, int free_slots) {
  std::vector<std::string> out;
  for (const auto& q : queue) {
    if (q.ranks > free_slots) break;  // head-of-line blocks the rest
    free_slots -= q.ranks;
    out.push_back(q.id);
  }
  return out;
}

bool fits_capacity(int ranks, int total_slots) { return ranks >= 1 && ranks <= total_slots; }

}  // namespace rx::coord
