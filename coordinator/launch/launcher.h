#pragma once
// [Launcher] How a job's processes are started, watched and stopped. The local launcher runs mpirun
// on this machine; the Slurm launcher (sbatch/scontrol/scancel) implements the same four calls, plus
// live_info() for a job that waits in Slurm's own queue.
#include <cstdint>
#include <optional>
#include <string>
#include <variant>

namespace rx::coord {

struct LaunchSpec {
  std::string job_id;
  std::string job_dir;  // holds config.json, worker.log, run/
  int world_size = 1;
  std::string secret;  // handed to the job via env RX_JOB_SECRET, never argv
  std::string coordinator_url;
  bool resume = false;  // a restart: the worker continues from its newest checkpoint (--resume)
};

// [Launch handle] What a launcher started: a local process group (mpirun as its session leader, so
// pgid == pid) or a job in a batch system's queue (a Slurm job id). The job record keeps both kinds in
// its pid/pgid/proc_start columns (see record_id()); the launcher turns a record back into its own kind
// of handle (Launcher::from_record), so a record written by any version loads the same.
struct LocalProcess {
  int64_t pid = 0;  // the launcher process (mpirun); its process group and session id too (setsid)
  // [Process identity] /proc/<pid>/stat field 22 (start time in clock ticks since boot) of `pid`;
  // a pid whose start time differs is a recycled pid: never adopted, never signalled. 0 = unknown.
  uint64_t start_time = 0;
};
struct BatchJob {
  int64_t id = 0;  // the batch system's job id
};

class LaunchHandle {
 public:
  LaunchHandle() = default;  // nothing started
  // Implicit on purpose: a LocalProcess or a BatchJob is a handle (`return LocalProcess{pid, st};`).
  LaunchHandle(LocalProcess p) : v_(p) {}
  LaunchHandle(BatchJob b) : v_(b) {}
  const LocalProcess* local() const { return std::get_if<LocalProcess>(&v_); }
  const BatchJob* batch() const { return std::get_if<BatchJob>(&v_); }
  // The number a job record stores as its pid (and pgid): the process id or the batch job id; 0: none.
  int64_t record_id() const {
    if (const auto* p = local()) return p->pid;
    if (const auto* b = batch()) return b->id;
    return 0;
  }
  uint64_t start_time() const { return local() ? local()->start_time : 0; }

 private:
  std::variant<std::monostate, LocalProcess, BatchJob> v_;
};

// [Exit outcome] How a job ended, as the coordinator acts on it. kUnknown: its processes are gone but
// nobody saw the exit status (re-attached after a restart, or forgotten by Slurm); a result report or
// <job dir>/run/result.json may still prove a success.
enum class ExitOutcome { kSucceeded, kFailed, kUnknown, kCancelled };

struct ExitInfo {
  ExitOutcome outcome = ExitOutcome::kFailed;
  std::optional<int> exit_code;  // nullopt when unknown or killed by a signal
  std::string reason;            // empty on success; the job's error otherwise

  // An exit status was read: 0 is a success, anything else a failure with `reason`.
  static ExitInfo exited(int code, std::string reason = "") {
    return {code == 0 ? ExitOutcome::kSucceeded : ExitOutcome::kFailed, code, std::move(reason)};
  }
  static ExitInfo failed(std::string reason, std::optional<int> code = std::nullopt) {
    return {ExitOutcome::kFailed, code, std::move(reason)};
  }
  static ExitInfo unknown(std::string reason) {
    return {ExitOutcome::kUnknown, std::nullopt, std::move(reason)};
  }
  // Ended by a cancel outside the coordinator (scancel by an admin).
  static ExitInfo cancelled(std::string reason, std::optional<int> code = std::nullopt) {
    return {ExitOutcome::kCancelled, code, std::move(reason)};
  }
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
  // The handle a job record stands for (its pid and proc_start columns); 0 = nothing was started.
  virtual LaunchHandle from_record(int64_t pid, uint64_t start_time) const {
    if (pid <= 0) return {};
    return LocalProcess{pid, start_time};
  }
  // [Slow launchers] true when start() and cancel() run external commands that may take seconds
  // (sbatch, scancel): the service then calls them from its tick thread only, never from an I/O thread.
  virtual bool slow_commands() const { return false; }
};

}  // namespace rx::coord
