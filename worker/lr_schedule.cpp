#include "worker/lr_schedule.h"

#include <cmath>

namespace rx::worker {

double learning_rate(const nlohmann::json& t, int world_size, double progress) {
  const auto& s = t.at("lr_schedule");
  double base = t.at("optimizer").at("lr").get<double>();
  if (s.at("scale_with_world").get<bool>()) base *= world_size;
  const double epochs = t.at("epochs").get<double>();
  const double warmup = std::min(s.at("warmup_epochs").get<double>(), epochs);
  if (warmup > 0 && progress < warmup) return base * (0.1 + 0.9 * progress / warmup);
  const std::string name = s.at("name").get<std::string>();
  if (name == "multistep") {
    double lr = base;
    for (double m : s.at("milestones")) lr *= progress >= m * epochs ? s.at("gamma").get<double>() : 1.0;
    return lr;
  }
  if (name == "cosine") {
    const double span = std::max(1e-9, epochs - warmup);
    const double x = std::min(1.0, std::max(0.0, (progress - warmup) / span));
    return base * 0.5 * (1.0 + std::cos(M_PI * x));
  }
  return base;
}

}  // namespace rx::worker
