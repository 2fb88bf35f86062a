// [JobService: metrics text] Job and slot gauges in the Prometheus text format (GET /metrics; the
// router appends the HTTP metrics). A job's own series (its id, its speed) go only to those who may
// read the job, as everywhere else in the API; the totals are for every user.
#include <map>
#include <mutex>
#include <sstream>

#include "coordinator/jobs/job_service.h"

namespace rx::coord {

namespace fs = std::filesystem;
using nlohmann::json;

std::string JobService::prometheus(const Principal& who) const {
  std::shared_lock lock(mu_);
  std::map<std::string, int> by_state;
  for (auto st : {JobState::kQueued, JobState::kLaunching, JobState::kRunning, JobState::kRestarting,
                  JobState::kSucceeded, JobState::kFailed, JobState::kCancelled})
    by_state[to_string(st)] = 0;
  std::ostringstream os;
  for (const auto& [id, j] : jobs_) by_state[to_string(j.state)]++;
  os << "# HELP rx_jobs Jobs by state.\n# TYPE rx_jobs gauge\n";
  for (const auto& [st, n] : by_state) os << "rx_jobs{state=\"" << st << "\"} " << n << "\n";
  const int busy = busy_slots_locked();
  os << "# HELP rx_slots Slots (one rank each) by use.\n# TYPE rx_slots gauge\n";
  os << "rx_slots{state=\"busy\"} " << busy << "\nrx_slots{state=\"free\"} " << (opts_.slots - busy) << "\n";
  os << "# HELP rx_job_images_per_second Sum over ranks of the last reported images/s of a running job.\n"
        "# TYPE rx_job_images_per_second gauge\n";
  for (const auto& [id, j] : jobs_) {
    if (j.state != JobState::kRunning || !visible(who, j)) continue;
    double ips = 0;
    if (j.last_progress.is_object() && j.last_progress.contains("ranks") &&
        j.last_progress["ranks"].is_array())
      for (const auto& r : j.last_progress["ranks"])
        if (r.is_object() && r.contains("images_per_sec") && r["images_per_sec"].is_number())
          ips += r["images_per_sec"].get<double>();
    os << "rx_job_images_per_second{job=\"" << id << "\"} " << ips << "\n";
  }
  return os.str();
}

}  // namespace rx::coord
