#pragma once
// [Stop vote] A stop signal (SIGTERM or SIGUSR1: preemption) may reach one rank or all of them, at any
// point of a step, and every rank must still stop after the same step and checkpoint the same
// position. So the ranks vote, by an all-reduce (max) of their signal flags, once per step.
//
// The vote used to go through the training communicator and be read at once. On GPUs that copied a
// host flag to the device and back, and each copy waited for the whole step queued on the stream:
// the host could never queue step s+1 while the GPU ran step s, on every step, even alone. Now:
// - a world of one reads its own flag: no collective at all;
// - otherwise the vote goes over a host communicator (`host`: the MPI communicator the worker boots
//   with, or the training communicator where that is a CPU backend), is cast at the end of step s and
//   read at the end of step s+1. Every rank reads the same vote after the same step, and reading it
//   never waits for the device (with NCCL training, MPI only advances the vote inside that wait, so
//   the wait is short but not hidden). A rank acts on a signal one step later than it arrived.
//   When the vote says stop, no new one is cast; finish() takes the last one in at the end of
//   training; a rank that fails drops it (the job is aborted anyway), so no collective is left open
//   at MPI_Finalize and no failing rank waits a timeout out before the abort.
#include <cstdint>
#include <memory>

#include "common/comm/communicator.h"

namespace rx::worker {

class StopVote {
 public:
  // `host` == nullptr: a world of one. Otherwise a communicator whose tensors live on the CPU.
  StopVote(comm::Communicator* host, comm::Millis timeout);
  ~StopVote();  // drops a vote still in flight (a rank failing: the job is aborted); never throws
  StopVote(const StopVote&) = delete;
  StopVote& operator=(const StopVote&) = delete;

  // Called at the end of every step, on every rank alike, with this rank's signal (0: none). True
  // when the vote cast a step earlier found a signal on some rank (at once for a world of one).
  bool next(int64_t signal);
  // At the end of training, on every rank: waits for the vote still in flight (bounded by the timeout).
  void finish();

 private:
  comm::Communicator* host_;
  comm::Millis timeout_;
  torch::Tensor flag_;
  std::shared_ptr<comm::Work> pending_;
};

}  // namespace rx::worker
