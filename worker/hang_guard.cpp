#include "worker/hang_guard.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <random>

#include "common/comm/hang/traced_communicator.h"
#include "common/config/job_spec.h"
#include "common/util/file_util.h"

namespace rx::worker {

using json = nlohmann::json;

namespace {
// Rank 0 draws a run id and broadcasts it: heartbeat files and reports of an earlier run in the same
// folder (a resume) are then ignored instead of being mistaken for this run's.
std::string agree_run_id(comm::Communicator& boot) {
  int64_t id = 0;
  if (boot.rank() == 0) {
    std::random_device rd;
    id = static_cast<int64_t>(
             (static_cast<uint64_t>(rd()) << 31) ^ rd() ^
             static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch().count()) ^
             static_cast<uint64_t>(getpid())) &
         0x7fffffffffffffffLL;
  }
  auto t = torch::tensor({id}, torch::kInt64);
  boot.broadcast(t, {0, comm::Millis(120000)})->wait(comm::Millis(120000));
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(t.item<int64_t>()));
  return buf;
}
}  // namespace

HangGuard guard_against_hangs(std::unique_ptr<comm::Communicator> comm, const config::JobSpec& spec,
                              comm::Communicator& boot, ReportSender* sender) {
  HangGuard g;
  const double timeout_s = spec.distributed.hang_timeout_s;
  // Every rank takes the same branch (same config, same world size), so the broadcast below matches.
  if (timeout_s <= 0 || comm->world_size() < 2) {
    g.comm = std::move(comm);
    return g;
  }
  const std::string out = spec.output.dir;
  comm::hang::WatchdogOptions o;
  o.dir = out + "/heartbeat";
  o.run_id = agree_run_id(boot);
  o.rank = comm->rank();
  o.world_size = comm->world_size();
  o.hang_timeout_s = timeout_s;
  o.interval_s = comm::hang::default_interval(timeout_s);
  auto trace = std::make_shared<comm::hang::CollectiveTrace>();
  g.comm = std::make_unique<comm::hang::TracedCommunicator>(std::move(comm), trace);
  const std::string sha = config::config_hash(spec);
  auto on_hang = [out, sha, sender, world = o.world_size](const json& report, bool mine) {
    if (!mine) return;
    json record = {{"status", "failed"},
                   {"error", report.value("message", "")},
                   {"hang", report},
                   {"world_size", world},
                   {"config_sha256", sha}};
    write_file_atomic(out + "/result.json", record.dump(2) + "\n");
    spdlog::info("hang report written to {}/result.json", out);
    // Bounded well below the peers' delivery wait (45 s): the job must end soon after a hang.
    if (sender) sender->deliver({{"type", "hang"}, {"report", report}}, 30);
  };
  g.watchdog = std::make_unique<comm::hang::HangWatchdog>(o, trace, on_hang);
  return g;
}

}  // namespace rx::worker
