#pragma once
// Thread backend: an in-process group for tests. make_thread_group(n) returns n communicators,
// one per rank, each to be driven from its own thread. Multi-rank logic (gradient averaging,
// metric reduction, checkpoint agreement) is tested with it without mpiexec.
#include <memory>
#include <vector>

#include "common/comm/communicator.h"

namespace rx::comm {

// [Thread group] Ranks meet in a shared store (one mutex, one condition variable). Each rank numbers
// its collectives 0, 1, 2, ...; collective k of every rank lands in round k, so rounds act as the
// generation counter and ranks may run ahead of each other by any number of posted operations.
// The first rank to observe a complete round computes the result, reducing in rank order so sums
// are bit-for-bit deterministic; the round is dropped once every rank has taken its result.
// Waits use condition_variable::wait_until, so a missing rank produces a CommError, not a hang.
// CPU tensors only; every dtype torch can add, compare and copy.
std::vector<std::unique_ptr<Communicator>> make_thread_group(int world_size);

}  // namespace rx::comm
