#pragma once
// [LocalLauncher] mpirun on this host, started with fork+execvp (no shell) after setsid(), so the job
// is its own session and process group. Open MPI puts each rank in a process group of its own but
// keeps the session, so "everything the job started" = every process whose session id is the job's;
// poll/cancel/reattach scan /proc for that session. mpirun's exit status is read with waitid(WNOWAIT)
// first, then stragglers in the session are killed, then the zombie is reaped (so the pid cannot be
// reused while we still signal its session).
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "coordinator/launch/launcher.h"

namespace rx::coord {

class LocalLauncher : public Launcher {
 public:
  // worker: path to resnext_worker (or a stand-in script); mpirun: program name or path.
  // threads_per_rank > 0: each job's environment gets OMP_NUM_THREADS=threads_per_rank unless the
  // coordinator's own environment sets it ([Slot threads]: a slot is a share of this host's cores,
  // and jobs side by side must not each take all of them).
  LocalLauncher(std::string worker, std::string mpirun = "mpirun", int threads_per_rank = 0);
  LaunchHandle start(const LaunchSpec& spec) override;
  std::optional<ExitInfo> poll(const LaunchHandle& h) override;
  void cancel(const LaunchHandle& h, bool force) override;
  bool reattach(const LaunchHandle& h) override;
  std::optional<LaunchHandle> find_launched(const LaunchSpec& spec, int64_t launching_since_ms) override;

  // pids of live processes whose session id is `sid` (from /proc).
  static std::vector<int> session_members(int sid);

 private:
  std::string worker_;
  std::string mpirun_;
  int threads_per_rank_ = 0;
  std::mutex mu_;
  std::map<int64_t, std::optional<ExitInfo>> children_;  // our own children: exit once known
};

}  // namespace rx::coord
