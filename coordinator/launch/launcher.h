#pragma once
// [Launcher] How a job's processes are started, watched and stopped. The local launcher runs mpirun
// on this machine; the Slurm launcher (sbatch/scontrol/scancel) implements the same four calls, plus
// live_info() for a job that waits in Slurm's own queue.
#include <cstdint>
#include <optional>
#include <string>

namespace rx::coord {

struct LaunchSpec {
  std::string job_id;
  std::string job_dir;      // holds config.json, worker.log, run/
  int world_size = 1;
  std::string secret;       // handed to the job via env RX_JOB_SECRET, never argv
  std::string coordinator_url;
  bool resume = false;      // a restart: the worker continues from its newest checkpoint (--resume)
};

struct LaunchHandle {
  int64_t pid = 0;   // the launcher process (mpirun)
  int64_t pgid = 0;  // its process group == session id (the launcher calls setsid)
  // [Process identity] /proc/<pid>/stat field 22 (start time in clock ticks since boot) of `pid`;
  // a pid whose start time differs is a recycled pid: never adopted, never signalled. 0 = unknown.
  uint64_t start_time = 0;
};

struct ExitInfo {
  std::optional<int> exit_code;  // nullopt when unknown (re-attached job) or killed by a signal
  std::string reason;            // empty on exit 0
  bool cancelled = false;        // ended by a cancel outside the coordinator (scancel by an admin)
};

// A live job as its launcher last saw it. queued: waiting in an external queue (Slurm PENDING,
// REQUEUED); detail: why (the pending reason), shown as the job's error while it waits.
struct LiveInfo {
  bool queued = false;
  std::string detail;
};

class Launcher {
 public:
  virtual ~Launcher() = default;
  // Starts the job; throws rx::Error (IoError etc.) when it cannot.
  virtual LaunchHandle start(const LaunchSpec& spec) = 0;
  // nullopt while any process of the job still lives; the exit once all are gone.
  virtual std::optional<ExitInfo> poll(const LaunchHandle& h) = 0;
  // force=false: SIGTERM (graceful); force=true: SIGKILL to everything the job started.
  virtual void cancel(const LaunchHandle& h, bool force) = 0;
  // After a coordinator restart: true if the job's processes still live (it is then polled as usual).
  virtual bool reattach(const LaunchHandle& h) = 0;
  // After a restart that found a job still "launching": the processes that launch left behind, if
  // any live (identified by what start() records in the job dir before exec), else nullopt.
  virtual std::optional<LaunchHandle> find_launched(const LaunchSpec&, int64_t /*launching_since_ms*/) {
    return std::nullopt;
  }
  // Answered from the last poll (no external calls). Local jobs never wait once started.
  virtual LiveInfo live_info(const LaunchHandle&) { return {}; }
  virtual std::string kind() const { return "local"; }
};

}  // namespace rx::coord
