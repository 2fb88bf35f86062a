#pragma once
// [Hang side channel] Each rank's watchdog thread publishes its collective trace as a small JSON file,
// <output.dir>/heartbeat/rank-<r>.json, rewritten (write + rename) every interval, and the rank that
// finds one of its collectives older than distributed.hang_timeout_s reads every rank's file to write
// the report. Why files in the job folder rather than a TCP store on rank 0 or MPI one-sided memory:
//  - A stopped rank cannot serve anything: a store hosted by rank 0 disappears when rank 0 is the one
//    stopped, and MPI windows need the target (or a progress thread on it) to make progress in Open
//    MPI's default transports, plus MPI_THREAD_MULTIPLE for calls from the watchdog thread. A file is a
//    passive medium: it keeps the last state a rank wrote before it stopped, which is exactly "where it
//    was last seen", and its age says it stopped responding.
//  - The job folder is already shared by all ranks (checkpoints are loaded by every rank from it), so
//    this adds no requirement, no port and no listening socket (nothing for a network attacker to hit),
//    and it works without the coordinator (bare mpirun).
//  - Cost: one small rename per rank per interval (<= 2 s); on NFS, attribute caching delays freshness
//    by a few seconds, which is small against the 60 s default.
// The first rank to notice claims the report with link(2) on hang-<run id>.json (atomic, fails with
// EEXIST for the others), so exactly one report is written; the others read it and fail with it.
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>

#include "common/comm/hang/hang_report.h"
#include "common/comm/hang/traced_communicator.h"

namespace rx::comm::hang {

struct WatchdogOptions {
  std::string dir;     // the shared heartbeat folder, e.g. <output.dir>/heartbeat
  std::string run_id;  // identical on every rank of one run (stale files of other runs are ignored)
  int rank = 0;
  int world_size = 1;
  double hang_timeout_s = 60;
  double interval_s = 1;        // heartbeat period; also how often the trace is checked
  double exit_grace_s = 15;     // after tripping: if the process still runs then, it exits with code 1
  double delivery_wait_s = 45;  // how long other ranks give the reporter to record and send its report
};

// Default interval: a tenth of the hang timeout, between 0.2 s and 2 s.
double default_interval(double hang_timeout_s);

class HangWatchdog {
 public:
  // `on_hang(report, mine)` runs on the watchdog thread once, before the trace is tripped: `mine` is
  // true on the one rank that wrote the report (it logs, records and sends it), false on the others.
  HangWatchdog(WatchdogOptions opts, std::shared_ptr<CollectiveTrace> trace,
               std::function<void(const nlohmann::json& report, bool mine)> on_hang);
  ~HangWatchdog();
  HangWatchdog(const HangWatchdog&) = delete;
  HangWatchdog& operator=(const HangWatchdog&) = delete;

  std::string report_path() const;
  std::string state_path(int rank) const;

 private:
  void loop();
  void beat();
  void check();
  void detect(const CollectiveInfo& hung);
  void handle(const nlohmann::json& report, bool mine);
  std::optional<RankState> read_state(int rank) const;

  WatchdogOptions opts_;
  std::shared_ptr<CollectiveTrace> trace_;
  std::function<void(const nlohmann::json&, bool)> on_hang_;
  std::string host_;
  bool handled_ = false;
  std::optional<std::chrono::steady_clock::time_point> report_seen_at_;
  std::chrono::steady_clock::time_point tripped_at_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace rx::comm::hang
