#pragma once
// [Job] One training job as the coordinator knows it. The in-memory Job is the source for API
// responses; JobStore persists every field (write-through), so a restart rebuilds the same map.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace rx::coord {

// [Launching] A job is committed as kLaunching (secret hash, start time) before its processes are
// forked, and as kRunning (pid, process start time) after. A coordinator that finds kLaunching on
// restart looks for the processes the launch left behind and never launches the job again.
// [Restarts] kRestarting: the job's processes failed and it waits out its backoff before being
// launched again with --resume (it keeps its slots meanwhile, so the relaunch never queues).
enum class JobState { kQueued, kLaunching, kRunning, kRestarting, kSucceeded, kFailed, kCancelled };

std::string to_string(JobState s);
std::optional<JobState> parse_job_state(const std::string& s);
inline bool is_terminal(JobState s) {
  return s != JobState::kQueued && s != JobState::kLaunching && s != JobState::kRunning &&
         s != JobState::kRestarting;
}

struct Job {
  int64_t seq = 0;  // submission order (FIFO and "newest first" listing)
  std::string id;
  std::string name;
  std::string owner;
  JobState state = JobState::kQueued;
  int world_size = 1;
  nlohmann::json config;  // resolved config
  std::string idempotency_key;
  std::string request_hash;  // sha256 of the submit body, to tell a retry from a reused key
  int64_t created_ms = 0;
  int64_t started_ms = 0;   // 0 = not yet
  int64_t finished_ms = 0;  // 0 = not yet
  int64_t pid = 0;          // launcher process (mpirun); its pgid == sid == pid (setsid)
  int64_t pgid = 0;
  uint64_t proc_start = 0;  // /proc/<pid>/stat field 22 of the launcher process (0: unknown)
  std::optional<int> exit_code;
  std::string error;
  std::string secret_hash;  // sha256 hex of the per-job secret
  bool cancel_requested = false;
  int64_t cancel_ms = 0;
  nlohmann::json last_progress;  // last progress report body (null until one arrives)
  nlohmann::json result;         // the worker's run record (null until reported)
  nlohmann::json hang;           // the last hang report of the job (null if none), see [Hang reports]
  int max_restarts = 0;          // relaunches (with --resume) allowed after a failure
  // [Fewer ranks] A relaunch may run on fewer ranks (>= min_ranks) when fewer slots are free than the
  // job asked for; world_size is then the current attempt's. 0 (rows from before) = world_size.
  int min_ranks = 0;
  // One entry per launch: {attempt, started_ms, ended_ms, cause, exit_code, resumed_from, world_size,
  // log_offset (where its lines start in worker.log)}.
  nlohmann::json attempts = nlohmann::json::array();
  int64_t restart_due_ms = 0;  // kRestarting: when the relaunch is due
  int64_t reports = 0;         // reports stored (counted at load; not a column)
  std::string slurm_job_id;    // --launcher slurm: the Slurm job id (== pid; derived, not stored)
};

// The ranks the job asked for: its first attempt's world size (world_size before any launch).
int requested_ranks(const Job& job);

// The API v1 view of a job (no secrets, no config).
nlohmann::json job_to_json(const Job& job);

}  // namespace rx::coord
