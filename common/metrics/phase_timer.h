#pragma once
// Per-phase wall time of a training step (data wait, forward, backward, exposed communication,
// optimizer). On a CUDA device kernels run asynchronously, so a lap would only time their launch
// and the wait would land in whichever phase next blocks (or in no phase at all): set_device_sync()
// makes every lap first wait for the device.
#include <array>
#include <chrono>
#include <functional>
#include <string>
#include <utility>

namespace rx::metrics {

enum class Phase { kData, kForward, kBackward, kComm, kOptimizer, kCount };
const char* phase_name(Phase p);  // "data_wait", "forward", "backward", "comm_exposed", "optimizer"

// One finished lap: which phase, when it began, how long it took.
struct PhaseRecord {
  Phase phase;
  std::chrono::steady_clock::time_point start;
  double ms;
};

class PhaseTimer {
 public:
  using Clock = std::chrono::steady_clock;
  void start() { t0_ = Clock::now(); }
  // Adds the time since the last start()/lap() to `phase` and restarts the clock.
  void lap(Phase p) {
    if (device_sync_) device_sync_();
    const auto now = Clock::now();
    const double ms = std::chrono::duration<double, std::milli>(now - t0_).count();
    total_ms_[static_cast<size_t>(p)] += ms;
    if (sink_) sink_(PhaseRecord{p, t0_, ms});
    t0_ = now;
  }
  double total_ms(Phase p) const { return total_ms_[static_cast<size_t>(p)]; }
  double sum_ms() const {
    double s = 0;
    for (double v : total_ms_) s += v;
    return s;
  }
  void reset() { total_ms_.fill(0); }
  void set_device_sync(std::function<void()> sync) { device_sync_ = std::move(sync); }
  // [Phase sink] Receives every finished record, in lap order (the trace timeline consumes these
  // rather than taking its own timestamps, so it shows exactly what the totals count). A timer that
  // measures asynchronously delivers a record once it is measured.
  void set_sink(std::function<void(const PhaseRecord&)> sink) { sink_ = std::move(sink); }

 private:
  Clock::time_point t0_ = Clock::now();
  std::array<double, static_cast<size_t>(Phase::kCount)> total_ms_{};
  std::function<void()> device_sync_;
  std::function<void(const PhaseRecord&)> sink_;
};

}  // namespace rx::metrics
