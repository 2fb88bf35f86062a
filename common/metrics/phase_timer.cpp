#include "common/metrics/phase_timer.h"

namespace rx::metrics {
const char* phase_name(Phase p) {
  switch (p) {
    case Phase::kData: return "data_wait";
    case Phase::kForward: return "forward";
    case Phase::kBackward: return "backward";
    case Phase::kComm: return "comm_exposed";
    case Phase::kOptimizer: return "optimizer";
    case Phase::kCount: break;
  }
  return "?";
}
}  // namespace rx::metrics
