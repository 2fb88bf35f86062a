#pragma once
// Per-phase wall time of a training step (data wait, forward, backward, exposed communication,
// optimizer). On a CUDA device the caller synchronises before stop() so times are not just launch
// times.
#include <array>
#include <chrono>
#include <string>

namespace rx::metrics {

enum class Phase { kData, kForward, kBackward, kComm, kOptimizer, kCount };
const char* phase_name(Phase p);  // "data_wait", "forward", "backward", "comm_exposed", "optimizer"

class PhaseTimer {
 public:
  using Clock = std::chrono::steady_clock;
  void start() { t0_ = Clock::now(); }
  // Adds the time since the last start()/lap() to `phase` and restarts the clock.
  void lap(Phase p) {
    const auto now = Clock::now();
    total_ms_[static_cast<size_t>(p)] += std::chrono::duration<double, std::milli>(now - t0_).count();
    t0_ = now;
  }
  double total_ms(Phase p) const { return total_ms_[static_cast<size_t>(p)]; }
  double sum_ms() const {
    double s = 0;
    for (double v : total_ms_) s += v;
    return s;
  }
  void reset() { total_ms_.fill(0); }

 private:
  Clock::time_point t0_ = Clock::now();
  std::array<double, static_cast<size_t>(Phase::kCount)> total_ms_{};
};

}  // namespace rx::metrics
