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
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace rx::metrics {

enum class Phase { kData, kForward, kBackward, kComm, kOptimizer, kCount };
const char* phase_name(Phase p);  // "data_wait", "forward", "backward", "comm_exposed", "optimizer"

// One finished lap: which phase, when it began, how long it took. On a device timeline `start` is
// the device time mapped onto the host clock (the first marker taken as recorded when the host
// recorded it).
struct PhaseRecord {
  Phase phase;
  std::chrono::steady_clock::time_point start;
  double ms;
};

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
  // [Phase sink] Receives every finished record, in lap order (the trace timeline consumes these
  // rather than taking its own timestamps, so it shows exactly what the totals count). On a device
  // timeline a record arrives once its markers are resolved.
  void set_sink(std::function<void(const PhaseRecord&)> sink) { sink_ = std::move(sink); }

 private:
  static constexpr int kUncounted = -1;  // the interval before a start() marker belongs to no phase
  void drain(bool wait) const;
  void add(Phase p, Clock::time_point start, double ms) const;

  Clock::time_point t0_ = Clock::now();
  mutable std::array<double, static_cast<size_t>(Phase::kCount)> total_ms_{};
  std::function<void(const PhaseRecord&)> sink_;
  std::unique_ptr<DeviceClock> device_;
  mutable std::deque<int> pending_;  // per unresolved device marker: the phase its interval counts to
  bool device_started_ = false;
  Clock::time_point device_origin_;   // host time of the first device marker
  mutable double device_pos_ms_ = 0;  // device time of the newest resolved marker since the first
};

}  // namespace rx::metrics
