#pragma once
// [SlurmLauncher] Jobs go to Slurm instead of a local mpirun. start() renders <job_dir>/job.sbatch from
// the template (launch/slurm/train.sbatch: its body, its #SBATCH lines minus the node/task layout, and
// the job's values shell-quoted after the "@rx-settings@" marker) and submits it with
// `sbatch --parsable` as an argument vector; the Slurm job id becomes the handle (a BatchJob).
// The job's secret reaches the batch script through sbatch's environment (--export=ALL), never argv
// or the script. Slurm writes the job's output to <job_dir>/worker.log, so GET /logs streams it as is.
// poll() asks `scontrol show job -o ID` (sacct once slurmctld has forgotten the job) at most every
// poll_interval_ms per job and keeps what it saw for live_info(). Every command runs with a timeout;
// a command that fails or times out leaves the job as it was (a slurmctld restart is not a job failure).
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "coordinator/launch/launcher.h"

namespace rx::coord {

struct SlurmOptions {
  std::string template_path;             // launch/slurm/train.sbatch
  std::string worker;                    // resnext_worker as the compute nodes see it
  std::vector<std::string> sbatch_args;  // site flags: --partition=gpu, --gpus-per-task=1, --time=...
  int command_timeout_ms = 20000;
  int poll_interval_ms = 1000;
};

// What Slurm says about one job.
struct SlurmJobInfo {
  bool known = false;  // false: neither scontrol nor sacct know the job
  std::string state;   // PENDING, RUNNING, COMPLETED, ...
  std::string reason;  // pending reason
  std::optional<int> exit_code;
  int exit_signal = 0;
};

// How a Slurm state maps onto the coordinator's job: still live (queued or running) or ended.
struct SlurmMapping {
  bool live = true;
  bool queued = false;  // PENDING/REQUEUED/PREEMPTED...: waiting in Slurm's queue
  std::optional<ExitInfo> exit;
};
SlurmMapping map_slurm_state(const SlurmJobInfo& info);
// Parses one `scontrol show job -o` line (or a `sacct -P` "STATE|rc:sig" line when sacct is true).
SlurmJobInfo parse_scontrol_job(const std::string& line);
SlurmJobInfo parse_sacct_line(const std::string& line);
// Single quotes for a POSIX shell: anything inside is literal.
std::string shell_quote(const std::string& s);
// The template with its layout lines dropped and `settings` inserted after the marker; throws if absent.
std::string render_sbatch(const std::string& tmpl,
                          const std::vector<std::pair<std::string, std::string>>& settings);

class SlurmLauncher : public Launcher {
 public:
  explicit SlurmLauncher(SlurmOptions opts);
  LaunchHandle start(const LaunchSpec& spec) override;
  std::optional<ExitInfo> poll(const LaunchHandle& h) override;
  void cancel(const LaunchHandle& h, bool force) override;
  bool reattach(const LaunchHandle& h) override;
  // A job left "launching": Slurm's queue is asked for a job named rx-<id> (sbatch --job-name).
  std::optional<LaunchHandle> find_launched(const LaunchSpec& spec, int64_t launching_since_ms) override;
  LiveInfo live_info(const LaunchHandle& h) override;
  // A record's pid column holds the Slurm job id.
  LaunchHandle from_record(int64_t pid, uint64_t) const override {
    if (pid <= 0) return {};
    return BatchJob{pid};
  }
  bool slow_commands() const override { return true; }

 private:
  SlurmJobInfo query(int64_t id, bool* answered);
  struct Seen {
    int64_t checked_ms = 0;
    SlurmMapping mapping;
    std::string detail;
    int64_t force_ms = 0;
  };
  SlurmOptions opts_;
  std::mutex mu_;
  std::map<int64_t, Seen> seen_;
};

}  // namespace rx::coord
