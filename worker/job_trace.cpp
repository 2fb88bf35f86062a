#include "worker/job_trace.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "common/util/file_util.h"

namespace rx::worker {

namespace {
std::string host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "unknown host";
  return buf;
}
}  // namespace

std::unique_ptr<metrics::TraceRecorder> start_trace(comm::Communicator& comm, const std::string& dir,
                                                    comm::Millis timeout) {
  std::error_code ec;
  std::filesystem::remove(metrics::rank_trace_path(dir, comm.rank()), ec);
  if (comm.rank() == 0) std::filesystem::remove(dir + "/trace.json", ec);
  const size_t world = static_cast<size_t>(std::max(1, comm.world_size()));
  auto trace = std::make_unique<metrics::TraceRecorder>(comm.rank(), comm.world_size(), host_name(),
                                                        std::max(kMinTraceEvents, kTraceEventBudget / world));
  comm.barrier(timeout);
  trace->set_time_base(metrics::TraceRecorder::Clock::now());
  return trace;
}

void write_rank_trace(const metrics::TraceRecorder& trace, const std::string& dir, int rank) {
  try {
    write_file_atomic(metrics::rank_trace_path(dir, rank), trace.to_json().dump() + "\n");
    if (trace.dropped() > 0)
      spdlog::warn("trace: kept the first {} events, dropped {} (cap per rank)", trace.events(),
                   trace.dropped());
  } catch (const std::exception& e) {
    spdlog::warn("trace of rank {} not written: {}", rank, e.what());
  }
}

void merge_job_trace(const std::string& dir, int world_size, std::chrono::milliseconds wait) {
  try {
    const auto out = metrics::merge_traces({dir, world_size, wait});
    if (out.missing_ranks.empty())
      spdlog::info("trace: {} events of {} ranks in {}", out.events, world_size, out.path);
    else
      spdlog::warn("trace: {} of {} ranks missing in {} (said so in its otherData)", out.missing_ranks.size(),
                   world_size, out.path);
  } catch (const std::exception& e) {
    spdlog::warn("trace not merged: {}", e.what());
  }
}

}  // namespace rx::worker
