#pragma once
// Per-phase time of a training step (data wait, forward, backward, exposed communication,
// optimizer). On the CPU a lap is host wall time. On a CUDA device kernels run asynchronously, so a
// host lap would only time their launch: there a DeviceClock records a marker (a CUDA event) on the
// device's stream at every start()/lap(), and a phase is the device time between its two markers
// ([Device timeline]). Nothing in the step waits for the device; markers are resolved when the
// device has passed them, or all at once (waiting) when a total is read.
#include <array>
#include <chrono>
#include <deque>
#include <memory>
#include <string>
#include <vector>

namespace rx::metrics {

enum class Phase { kData, kForward, kBackward, kComm, kOptimizer, kCount };
const char* phase_name(Phase p);  // "data_wait", "forward", "backward", "comm_exposed", "optimizer"

// Markers on a device's timeline. mark() records one on the current stream; resolve() returns, oldest
// first, the milliseconds from each resolved marker's predecessor to it (0 for the very first
// marker), for the markers the device has passed, or for all of them when `wait` is true.
class DeviceClock {
 public:
  virtual ~DeviceClock() = default;
  virtual void mark() = 0;
  virtual std::vector<double> resolve(bool wait) = 0;
};

// CUDA events on `device`'s current stream; nullptr in a build without CUDA.
std::unique_ptr<DeviceClock> make_cuda_clock(int device);

class PhaseTimer {
 public:
  using Clock = std::chrono::steady_clock;
  void start();
  // Adds the time since the last start()/lap() to `phase` and restarts the clock.
  void lap(Phase p);
  double total_ms(Phase p) const;
  double sum_ms() const;
  void reset();
  // [Device timeline] From now on, time phases on this device clock instead of the host's.
  void set_device_clock(std::unique_ptr<DeviceClock> clock);

 private:
  static constexpr int kUncounted = -1;  // the interval before a start() marker belongs to no phase
  void drain(bool wait) const;

  Clock::time_point t0_ = Clock::now();
  mutable std::array<double, static_cast<size_t>(Phase::kCount)> total_ms_{};
  std::unique_ptr<DeviceClock> device_;
  mutable std::deque<int> pending_;  // per unresolved device marker: the phase its interval counts to
};

}  // namespace rx::metrics
