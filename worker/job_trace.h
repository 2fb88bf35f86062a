#pragma once
// output.trace for one job (see [Trace timeline] in common/metrics/trace_events.h): every rank
// records, writes trace.rank<R>.json at the end, and rank 0 merges them into trace.json.
#include <memory>
#include <string>

#include "common/comm/communicator.h"
#include "common/metrics/trace_events.h"

namespace rx::worker {

// [Trace size] Events kept per rank: a budget of kTraceEventBudget for the whole job (about 150 bytes
// each in the merged file, so tens of MB at most), split evenly, never under kMinTraceEvents per rank.
constexpr size_t kTraceEventBudget = 200000;
constexpr size_t kMinTraceEvents = 2000;

// Collective (every rank): removes this rank's trace file of an earlier run in `dir` (rank 0 also the
// merged one), so a merge never picks up a stale file; then a barrier whose exit is the trace's time
// base ([Trace clock]).
std::unique_ptr<metrics::TraceRecorder> start_trace(comm::Communicator& comm, const std::string& dir,
                                                    comm::Millis timeout);

// Every rank, after training: writes <dir>/trace.rank<R>.json atomically. Errors are logged, not
// thrown: a trace never fails a finished run.
void write_rank_trace(const metrics::TraceRecorder& trace, const std::string& dir, int rank);

// Rank 0, after the final barrier: merges into <dir>/trace.json, waiting at most `wait` for files.
void merge_job_trace(const std::string& dir, int world_size, std::chrono::milliseconds wait);

}  // namespace rx::worker
