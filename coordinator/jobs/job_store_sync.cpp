// [JobService: store sync] Memory follows the store: commit() writes through to SQLite before the
// in-memory job changes, render() refreshes the cached body, recover() rebuilds memory from the store
// after a restart and resolves the jobs that were launching or running when the coordinator stopped.
#include <spdlog/spdlog.h>

#include <filesystem>
#include <mutex>

#include "coordinator/jobs/job_service.h"
#include "coordinator/util/util.h"

namespace rx::coord {

namespace fs = std::filesystem;
using nlohmann::json;

void JobService::render(const Job& job) {
  auto body = std::make_shared<const std::string>(dump_json(job_to_json(job)));  // [Foreign text]
  std::unique_lock lock(cache_mu_);
  cache_[job.id] = std::move(body);
}

std::shared_ptr<const std::string> JobService::cached(const std::string& id) const {
  std::shared_lock lock(cache_mu_);
  auto it = cache_.find(id);
  return it == cache_.end() ? nullptr : it->second;
}

void JobService::commit(Job& slot, const Job& updated) {
  store_->update(updated);  // throws before memory changes: memory never runs ahead of disk
  slot = updated;
  render(slot);
}

void JobService::record_handle(Job& j, const LaunchHandle& h) {
  j.pid = j.pgid = h.record_id();  // a local job's process group is its leader's pid (setsid)
  j.proc_start = h.start_time();
  const BatchJob* b = h.batch();
  j.slurm_job_id = b ? std::to_string(b->id) : "";
}

void JobService::recover() {
  std::unique_lock lock(mu_);
  const auto counts = store_->report_counts();
  for (Job& j : store_->load_all()) {
    const std::string id = j.id;
    if (auto c = counts.find(id); c != counts.end()) j.reports = c->second;
    order_[j.seq] = id;
    if (!j.idempotency_key.empty()) idempotency_[j.owner + "\n" + j.idempotency_key] = id;
    auto& slot = jobs_[id];
    slot = j;
    const LaunchHandle recorded = handle_of(j);
    if (const BatchJob* b = recorded.batch())
      slot.slurm_job_id = std::to_string(b->id);  // derived, not stored
    render(slot);
    if (j.state == JobState::kLaunching) {
      // The coordinator stopped between recording the launch and recording its outcome: adopt what
      // the launch left running, or fail the job. Never launch it again.
      LaunchSpec spec{id, job_dir(id), j.world_size, "", opts_.self_url};
      const int64_t since =
          !j.attempts.empty() ? j.attempts.back().value("started_ms", j.started_ms) : j.started_ms;
      auto h = launcher_->find_launched(spec, since);
      Job u = slot;
      if (h) {
        u.state = JobState::kRunning;
        record_handle(u, *h);
        spdlog::info("job {}: adopted processes (pid {}) of an interrupted launch", id, h->record_id());
      } else {
        u.state = JobState::kFailed;
        u.finished_ms = now_ms();
        u.error = "coordinator stopped while launching the job and no process of that launch lives";
        spdlog::warn("job {}: {}", id, u.error);
      }
      commit(slot, u);
      continue;
    }
    if (j.state != JobState::kRunning && !submitted(j)) continue;
    if (launcher_->reattach(handle_of(j))) {
      spdlog::info("job {}: re-attached to running process group {}", id, j.pgid);
      continue;
    }
    Job u = slot;
    u.finished_ms = now_ms();
    if (u.cancel_requested) {
      u.state = JobState::kCancelled;
    } else if (u.result.is_object()) {
      u.state = JobState::kSucceeded;  // it reported its result before the coordinator went down
    } else if (auto r = result_from_folder(u)) {
      u.result = std::move(*r);  // it finished while the coordinator was down: [Result on disk]
      u.state = JobState::kSucceeded;
      spdlog::info("job {}: took the result from {}/run/result.json", id, job_dir(id));
    } else {
      fail_attempt_locked(u, "coordinator restarted and the job's processes (pgid " + std::to_string(j.pgid) +
                                 ") were gone; exit status unknown");
    }
    if (is_terminal(u.state))
      end_attempt_locked(u, u.state == JobState::kFailed ? u.error : to_string(u.state), false);
    commit(slot, u);
    spdlog::warn("job {}: not running after restart -> {}", id, to_string(u.state));
  }
}

}  // namespace rx::coord
