#include "worker/lr_schedule.h"

#include <algorithm>
#include <cmath>

namespace rx::worker {

double learning_rate(const config::TrainingSpec& t, int world_size, double progress) {
  const auto& s = t.lr_schedule;
  double base = t.optimizer.lr;
  if (s.scale_with_world) base *= world_size;
  const double epochs = t.epochs;
  const double warmup = std::min(s.warmup_epochs, epochs);
  if (warmup > 0 && progress < warmup) return base * (0.1 + 0.9 * progress / warmup);
  switch (s.name) {
    case config::LrScheduleKind::kMultistep: {
      double lr = base;
      for (double m : s.milestones) lr *= progress >= m * epochs ? s.gamma : 1.0;
      return lr;
    }
    case config::LrScheduleKind::kCosine: {
      const double span = std::max(1e-9, epochs - warmup);
      const double x = std::min(1.0, std::max(0.0, (progress - warmup) / span));
      return base * 0.5 * (1.0 + std::cos(M_PI * x));
    }
    case config::LrScheduleKind::kConstant:
      break;
  }
  return base;
}

}  // namespace rx::worker
