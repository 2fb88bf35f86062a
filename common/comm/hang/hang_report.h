#pragma once
// [Hang report] The pure part of hang detection: what one rank publishes about itself (RankState, the
// heartbeat file's content) and how the rank that notices a hung collective turns every rank's last
// published state into a report naming the ranks that did not enter it. No I/O here except the
// optional /proc probe, so the logic is unit-testable (tests/comm/test_hang_report.cpp).
//
// Like c10d's desync debug report (ProcessGroupNCCL's watchdog + TORCH_NCCL_DESYNC_DEBUG), a rank is
// "in" collective N when it has posted N (collectives are numbered in call order, identical on every
// rank); unlike it, the states come from a side channel that does not need the missing rank's help
// (comm/hang/hang_watchdog.h), so a stopped rank is named with where it was last seen.
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace rx::comm::hang {

// One collective as the posting rank saw it.
struct CollectiveInfo {
  int64_t seq = 0;    // 1-based call order on this communicator
  std::string kind;   // "allreduce", "broadcast", "allgather", "barrier"
  std::string what;   // "allreduce of 27648 elements"
  int64_t step = -1;  // training step when it was posted (-1: before training)
  std::string phase;  // what the rank was doing ("backward", "eval", ...)
  int bucket = -1;    // gradient bucket for the reducer's all-reduces, else -1
  double age_s = 0;   // seconds since it was posted (at the time of the snapshot)
};

// A rank's last published state.
struct RankState {
  std::string run_id;
  int rank = 0;
  std::string host;
  int64_t pid = 0;
  int64_t last_posted = 0;                       // highest collective number posted (entered)
  int64_t last_done = 0;                         // highest collective number seen complete
  std::optional<CollectiveInfo> oldest_pending;  // the oldest posted, not yet complete collective
  std::optional<CollectiveInfo> last;            // the last posted collective
  int64_t step = -1;
  std::string phase;
  int64_t written_ms = 0;  // wall clock (ms since the epoch) when published
};

nlohmann::json to_json(const CollectiveInfo& c);
nlohmann::json to_json(const RankState& s);
// Throws rx::DataError naming the missing or mistyped field.
RankState rank_state_from_json(const nlohmann::json& j);

// What the process of a rank looks like from here: "stopped" (state T, e.g. SIGSTOP), "dead",
// "running" (same host), or "unknown" (another host).
using ProcessProbe = std::function<std::string(const RankState&)>;
// Reads /proc/<pid>/stat when `s.host` is this host.
std::string probe_process(const RankState& s);

struct ReportInput {
  int reporter = 0;     // the rank that noticed
  CollectiveInfo hung;  // the collective it waits for
  double hang_timeout_s = 60;
  double stale_after_s = 3;  // a heartbeat older than this counts as "not responding"
  int64_t now_ms = 0;
  std::vector<std::optional<RankState>> states;  // index = rank; nullopt: never published
};

// The report's per-rank entries grouped by host: [{host, ranks, silent}] (silent: no rank of that
// host has a fresh heartbeat). build_report puts it under "hosts" and names silent hosts in the message.
nlohmann::json group_by_host(const nlohmann::json& rank_entries);

// {collective{seq,kind,what,step,phase,bucket}, detected_by, waited_s, hang_timeout_s, entered[],
//  missing[], ranks[{rank, host, pid, entered, last_posted, last_done, step, phase, heartbeat_age_s,
//  responding, process, last_seen}], hosts[{host, ranks, silent}], message}
nlohmann::json build_report(const ReportInput& in, const ProcessProbe& probe = probe_process);

}  // namespace rx::comm::hang
