#include "common/metrics/phase_timer.h"

#include "common/util/error.h"

namespace rx::metrics {

const char* phase_name(Phase p) {
  switch (p) {
    case Phase::kData:
      return "data_wait";
    case Phase::kForward:
      return "forward";
    case Phase::kBackward:
      return "backward";
    case Phase::kComm:
      return "comm_exposed";
    case Phase::kOptimizer:
      return "optimizer";
    case Phase::kCount:
      break;
  }
  return "?";
}

void PhaseTimer::add(Phase p, Clock::time_point start, double ms) const {
  total_ms_[static_cast<size_t>(p)] += ms;
  if (sink_) sink_(PhaseRecord{p, start, ms});
}

void PhaseTimer::start() {
  if (device_) {
    drain(/*wait=*/false);  // keeps the queue as short as the device's lag behind the host
    if (!device_started_) {
      device_started_ = true;
      device_origin_ = Clock::now();
    }
    device_->mark();
    pending_.push_back(kUncounted);
    return;
  }
  t0_ = Clock::now();
}

void PhaseTimer::lap(Phase p) {
  if (device_) {
    device_->mark();
    pending_.push_back(static_cast<int>(p));
    return;
  }
  const auto now = Clock::now();
  add(p, t0_, std::chrono::duration<double, std::milli>(now - t0_).count());
  t0_ = now;
}

void PhaseTimer::drain(bool wait) const {
  if (!device_) return;
  for (double ms : device_->resolve(wait)) {
    RX_CHECK(!pending_.empty(), "device clock resolved more markers than were recorded");
    const int phase = pending_.front();
    pending_.pop_front();
    const auto start = device_origin_ + std::chrono::duration_cast<Clock::duration>(
                                            std::chrono::duration<double, std::milli>(device_pos_ms_));
    device_pos_ms_ += ms;
    if (phase != kUncounted) add(static_cast<Phase>(phase), start, ms);
  }
}

double PhaseTimer::total_ms(Phase p) const {
  drain(/*wait=*/true);
  return total_ms_[static_cast<size_t>(p)];
}

double PhaseTimer::sum_ms() const {
  drain(/*wait=*/true);
  double s = 0;
  for (double v : total_ms_) s += v;
  return s;
}

void PhaseTimer::reset() {
  drain(/*wait=*/true);
  total_ms_.fill(0);
}

void PhaseTimer::set_device_clock(std::unique_ptr<DeviceClock> clock) {
  drain(/*wait=*/true);
  device_ = std::move(clock);
  pending_.clear();
  device_started_ = false;
  device_pos_ms_ = 0;
}

}  // namespace rx::metrics
