#pragma once
// [Collective trace] Every rank records, outside the collective itself, which collective it is in:
// TracedCommunicator numbers each collective in call order (the same order on every rank, which MPI
// and NCCL require anyway), notes its kind, size, the training step, phase and gradient bucket, and
// marks it done when its Work completes. The hang watchdog (hang_watchdog.h) publishes that state
// and reads it back; the trace itself never talks to other ranks, so it keeps working while a peer
// is stopped.
//
// The wrapper's Work::wait also watches the trace's trip flag: once a hang report exists (this rank's
// or another's), a wait throws HangDetected instead of sitting out distributed.timeout_s.
#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "common/comm/communicator.h"
#include "common/comm/hang/hang_report.h"
#include "common/util/error.h"

namespace rx::comm::hang {

// A collective was found hung (by this rank or a peer); what() is the report's message.
class HangDetected : public CommError {
 public:
  using CommError::CommError;
};

class CollectiveTrace {
 public:
  // Returns the collective's number (1-based).
  int64_t post(const std::string& kind, const std::string& what);
  void done(int64_t seq);
  void set_step(int64_t step);
  void set_phase(const std::string& phase);
  void set_bucket(int bucket);  // applies to the next posted collective only

  // Fills the collective fields of `out` (last_posted, last_done, oldest_pending, last, step, phase).
  void snapshot(RankState& out) const;

  // Trip flag: set once with the report's message; waits then throw HangDetected.
  void trip(const std::string& message);
  bool tripped() const { return tripped_.load(std::memory_order_acquire); }
  std::string trip_message() const;

 private:
  struct Entry {
    CollectiveInfo info;
    std::chrono::steady_clock::time_point posted;
  };
  mutable std::mutex mu_;
  int64_t last_posted_ = 0;
  int64_t last_done_ = 0;
  std::map<int64_t, Entry> pending_;
  std::optional<Entry> last_;
  int64_t step_ = -1;
  std::string phase_ = "setup";
  int bucket_ = -1;
  std::atomic<bool> tripped_{false};
  std::string trip_message_;
};

// Wraps a communicator; every collective goes through the trace (shared with the watchdog).
class TracedCommunicator : public Communicator {
 public:
  TracedCommunicator(std::unique_ptr<Communicator> inner, std::shared_ptr<CollectiveTrace> trace);

  std::string backend_name() const override { return inner_->backend_name(); }
  Capabilities capabilities() const override { return inner_->capabilities(); }
  int rank() const override { return inner_->rank(); }
  int world_size() const override { return inner_->world_size(); }
  int local_rank() const override { return inner_->local_rank(); }
  int local_size() const override { return inner_->local_size(); }

  std::shared_ptr<Work> allreduce(torch::Tensor& tensor, const AllreduceOptions& opts = {}) override;
  std::shared_ptr<Work> broadcast(torch::Tensor& tensor, const BroadcastOptions& opts = {}) override;
  std::shared_ptr<Work> allgather(const torch::Tensor& input, torch::Tensor& output,
                                  const AllgatherOptions& opts = {}) override;
  void barrier(Millis timeout = Millis{300000}) override;

  CollectiveTrace& trace() { return *trace_; }

 private:
  std::shared_ptr<Work> traced(const std::string& kind, const std::string& what,
                               const std::function<std::shared_ptr<Work>()>& start);
  std::unique_ptr<Communicator> inner_;
  std::shared_ptr<CollectiveTrace> trace_;
};

// Annotations for the trace; no-ops on a communicator that is not traced (tests, the thread backend).
void mark_step(Communicator& comm, int64_t step);
void mark_phase(Communicator& comm, const std::string& phase);
void mark_bucket(Communicator& comm, int bucket);

}  // namespace rx::comm::hang
