// [JobService: state machine] Construction, lookups, listing, cancel, and the scheduling loop:
// queued -> launching -> running -> succeeded | failed | cancelled (restarts in job_faults.cpp).
#include "coordinator/jobs/job_service.h"

#include <spdlog/spdlog.h>

#include <filesystem>
#include <mutex>

#include "common/util/error.h"
#include "common/util/file_util.h"
#include "coordinator/jobs/api_error.h"
#include "coordinator/jobs/scheduler.h"
#include "coordinator/util/util.h"

namespace rx::coord {

namespace fs = std::filesystem;
using nlohmann::json;

JobService::JobService(ServiceOptions opts, std::unique_ptr<Launcher> launcher, Tokens tokens)
    : opts_(std::move(opts)), launcher_(std::move(launcher)), tokens_(std::move(tokens)) {
  RX_CHECK(opts_.slots >= 1, "slots must be >= 1");
  if (opts_.limits.max_ranks <= 0 || opts_.limits.max_ranks > opts_.slots)
    opts_.limits.max_ranks = opts_.slots;
  std::error_code ec;
  fs::create_directories(opts_.state_dir + "/jobs", ec);
  if (ec) throw IoError(opts_.state_dir, "cannot create state dir: " + ec.message());
  store_ = std::make_unique<JobStore>(opts_.state_dir + "/jobs.db");
}

void JobService::set_self_url(const std::string& url) {
  std::unique_lock lock(mu_);
  opts_.self_url = url;
}

std::string JobService::job_dir(const std::string& id) const { return opts_.state_dir + "/jobs/" + id; }

size_t JobService::cached_datasets() {
  std::lock_guard<std::mutex> lock(data_mu_);
  return datasets_.size();
}

Job& JobService::find_or_404(const std::string& id) {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) throw ApiError(404, "not_found", "no job '" + id + "'", "id");
  return it->second;
}
const Job& JobService::find_or_404(const std::string& id) const {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) throw ApiError(404, "not_found", "no job '" + id + "'", "id");
  return it->second;
}

std::shared_ptr<const std::string> JobService::job_body(const std::string& id) const { return cached(id); }

std::optional<Job> JobService::get(const std::string& id) const {
  std::shared_lock lock(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return std::nullopt;
  return it->second;
}

bool JobService::visible(const Principal& who, const Job& j) const {
  return !tokens_.enabled() || who.admin || j.owner == who.name;
}

void JobService::check_visible(const Principal& who, const std::string& id) const {
  std::shared_lock lock(mu_);
  auto it = jobs_.find(id);
  // Someone else's job answers exactly like a missing one: ids are not confirmed to strangers.
  if (it == jobs_.end() || !visible(who, it->second))
    throw ApiError(404, "not_found", "no job '" + id + "'", "id");
}

json JobService::list(std::optional<JobState> state, size_t limit, size_t offset,
                      const Principal* who) const {
  std::shared_lock lock(mu_);
  json arr = json::array();
  size_t matched = 0;
  for (auto it = order_.rbegin(); it != order_.rend(); ++it) {
    const Job& j = jobs_.at(it->second);
    if (state && j.state != *state) continue;
    if (who && !visible(*who, j)) continue;
    if (matched >= offset && arr.size() < limit) arr.push_back(job_to_json(j));
    ++matched;
  }
  json next = offset + arr.size() < matched ? json(offset + arr.size()) : json(nullptr);
  return json{{"jobs", arr}, {"total", matched}, {"offset", offset}, {"limit", limit}, {"next_offset", next}};
}

std::shared_ptr<const std::string> JobService::cancel(const std::string& owner, const std::string& id) {
  return cancel(Principal{owner, false}, id);
}

std::shared_ptr<const std::string> JobService::cancel(const Principal& who, const std::string& id) {
  const std::string& owner = who.name;
  std::unique_lock lock(mu_);
  Job& slot = find_or_404(id);
  // Someone else's job answers exactly like a missing one, as check_visible(): no owner is named.
  if (!visible(who, slot)) throw ApiError(404, "not_found", "no job '" + id + "'", "id");
  if (is_terminal(slot.state))
    throw ApiError(409, "conflict", "job '" + id + "' already " + to_string(slot.state));
  Job u = slot;
  if ((u.state == JobState::kQueued && !submitted(u)) || u.state == JobState::kRestarting) {
    u.state = JobState::kCancelled;
    u.finished_ms = now_ms();
    commit(slot, u);
  } else if (!u.cancel_requested) {
    u.cancel_requested = true;
    u.cancel_ms = now_ms();
    commit(slot, u);
    spdlog::info("job {}: cancel requested by {} (SIGTERM to pgid {})", id, owner, u.pgid);
    // A launching job has no process yet: launch() sends the SIGTERM once it has one. The signal (or
    // scancel, which may be slow) goes out after mu_ is released.
    if (u.pid > 0 && launcher_->slow_commands()) {
      pending_cancels_.push_back(id);  // scancel from the tick thread, never an I/O thread
    } else if (u.pid > 0) {
      lock.unlock();
      launcher_->cancel(handle_of(u), false);
    }
  }
  return cached(id);
}

int JobService::busy_slots_locked() const {
  int busy = 0;
  for (const auto& [id, j] : jobs_)
    if (j.state == JobState::kRunning || j.state == JobState::kLaunching || j.state == JobState::kRestarting)
      busy += j.world_size;
  return busy;
}

std::vector<LaunchSpec> JobService::schedule_locked() {
  std::vector<QueuedJob> queue;
  for (const auto& [seq, id] : order_) {
    const Job& j = jobs_.at(id);
    if (j.state == JobState::kQueued && !submitted(j)) queue.push_back({id, j.world_size});
  }
  std::vector<LaunchSpec> out;
  if (queue.empty()) return out;
  for (const auto& id : pick_fifo(queue, opts_.slots - busy_slots_locked()))
    if (auto spec = prepare_launch_locked(jobs_.at(id))) out.push_back(std::move(*spec));
  return out;
}

std::optional<LaunchSpec> JobService::prepare_launch_locked(Job& slot, bool resume) {
  Job u = slot;
  const std::string dir = job_dir(u.id);
  const std::string secret = random_hex(32);
  try {
    std::error_code ec;
    fs::create_directories(dir + "/run", ec);
    if (ec) throw IoError(dir, "cannot create job dir: " + ec.message());
    write_file_atomic(dir + "/config.json", dump_json(u.config, 2) + "\n");
    // The plan every rank will compute for epoch 0, written for people debugging a run.
    try {
      json plan = json::array();
      for (int r = 0; r < u.world_size; ++r) {
        json s = compute_shard(u, r, 0);
        plan.push_back({{"rank", r}, {"count", s["indices"].size()}, {"sha256", s["sha256"]}});
      }
      write_file_atomic(dir + "/shard_plan.json", plan.dump(2) + "\n");
    } catch (const std::exception&) {
      // dataset size unknown here (synthetic data generated in memory): the plan is the worker's own
    }
  } catch (const std::exception& e) {
    u.state = JobState::kFailed;
    u.finished_ms = now_ms();
    u.error = std::string("launch failed: ") + e.what();
    spdlog::error("job {}: {}", u.id, u.error);
    commit(slot, u);
    return std::nullopt;
  }
  // [Launching] Committed before the fork. If that fails nothing was started: the job fails in memory
  // (the store still says queued, so a restart may run it once); a restart after the fork finds
  // "launching" and adopts or fails the job, never launching it twice.
  u.state = JobState::kLaunching;
  const int64_t now = now_ms();
  if (u.started_ms == 0) u.started_ms = now;  // started_at stays the first launch; attempts have each
  json attempt = {{"attempt", u.attempts.size()}, {"started_ms", now}, {"world_size", u.world_size}};
  {  // where this attempt's lines start in worker.log: [Failure reason]
    std::error_code ec;
    const auto size = fs::file_size(dir + "/worker.log", ec);
    attempt["log_offset"] = ec ? int64_t{0} : static_cast<int64_t>(size);
  }
  if (resume) {
    u.error.clear();  // "restarting after: ..." is history now; the cause stays in the attempt
    const std::string ck = newest_checkpoint(u.id);
    attempt["resumed_from"] = ck.empty() ? json("none (starts over)") : json(ck);
  }
  u.attempts.push_back(std::move(attempt));
  u.secret_hash = sha256_hex(secret);
  try {
    commit(slot, u);
  } catch (const std::exception& e) {
    Job f = slot;
    f.state = JobState::kFailed;
    f.finished_ms = now_ms();
    f.error = std::string("cannot record the launch: ") + e.what();
    slot = f;
    render(slot);
    spdlog::error("job {}: {}", u.id, f.error);
    return std::nullopt;
  }
  return LaunchSpec{u.id, dir, u.world_size, secret, opts_.self_url, resume};
}

void JobService::launch(const LaunchSpec& spec) {
  // Outside mu_: sbatch can be slow, and nothing else needs to wait for it (the job is "launching").
  std::optional<LaunchHandle> h;
  std::string error;
  try {
    h = launcher_->start(spec);
  } catch (const std::exception& e) {
    error = std::string("launch failed: ") + e.what();
  } catch (...) {  // whatever a launcher throws, the job must leave "launching"
    error = "launch failed: unknown error";
  }
  std::unique_lock lock(mu_);
  Job& slot = jobs_.at(spec.job_id);
  Job u = slot;  // may carry a cancel that arrived while launching
  if (h) {
    record_handle(u, *h);
    u.state = JobState::kRunning;
    spdlog::info("job {}: started, pid {} ({} ranks)", u.id, h->record_id(), u.world_size);
    if (u.cancel_requested && launcher_->slow_commands())
      pending_cancels_.push_back(u.id);
    else if (u.cancel_requested)
      launcher_->cancel(*h, false);
  } else {
    u.state = JobState::kFailed;
    u.finished_ms = now_ms();
    u.error = error;
    spdlog::error("job {}: {}", u.id, u.error);
  }
  try {
    commit(slot, u);
  } catch (const std::exception& e) {
    // The processes run whatever the disk says: memory follows them (so the job is polled, reaped and
    // never started again); the store keeps "launching", which a restart resolves via find_launched.
    slot = u;
    render(slot);
    spdlog::error("job {}: started but cannot record it: {}", u.id, e.what());
  }
}

void JobService::finish(const std::string& id, const ExitInfo& ex) {
  std::unique_lock lock(mu_);
  Job& slot = find_or_404(id);
  if (slot.state != JobState::kRunning && !submitted(slot)) return;
  Job u = slot;
  u.finished_ms = now_ms();
  u.exit_code = ex.exit_code;
  u.error.clear();  // a Slurm pending reason from before the end is no longer true
  // [Result on disk] The worker writes result.json before it reports; a report that never arrived
  // (coordinator down, or gone after a restart) is taken from the job folder instead.
  // Only for an exit that may be a success: a failed exit is never turned into one.
  const bool cancelled = u.cancel_requested || ex.outcome == ExitOutcome::kCancelled;
  const bool maybe_ok = ex.outcome == ExitOutcome::kSucceeded || ex.outcome == ExitOutcome::kUnknown;
  if (!u.result.is_object() && !cancelled && maybe_ok)
    if (auto r = result_from_folder(u)) u.result = std::move(*r);
  if (cancelled) {
    u.state = JobState::kCancelled;
  } else if (ex.outcome == ExitOutcome::kSucceeded) {
    u.state = JobState::kSucceeded;
  } else if (ex.outcome == ExitOutcome::kUnknown && u.result.is_object()) {
    u.state = JobState::kSucceeded;
  } else {
    fail_attempt_locked(u, ex.reason.empty() ? "worker failed" : ex.reason);
  }
  if (is_terminal(u.state))
    end_attempt_locked(u, u.state == JobState::kFailed ? u.error : to_string(u.state), false);
  commit(slot, u);
  spdlog::info("job {}: {} (exit {})", id, to_string(u.state),
               ex.exit_code ? std::to_string(*ex.exit_code) : "?");
}

// [External queue] A Slurm job can wait in Slurm's queue after submission (PENDING) and go back to it
// (requeued after a checkpoint). Such a job is "queued" with its pid (the Slurm job id) set: the
// scheduler never starts it again, tick() keeps polling it, and its error says why it waits.
void JobService::update_live(const std::string& id, const LiveInfo& live) {
  std::unique_lock lock(mu_);
  Job& slot = find_or_404(id);
  if (is_terminal(slot.state)) return;
  const JobState want = live.queued ? JobState::kQueued : JobState::kRunning;
  if (slot.state == want && slot.error == live.detail) return;
  Job u = slot;
  u.state = want;
  u.error = live.detail;
  commit(slot, u);
}

void JobService::tick() {
  struct Running {
    std::string id;
    LaunchHandle h;
    bool cancel_requested;
    int64_t cancel_ms;
  };
  std::vector<Running> running;
  std::vector<LaunchHandle> to_cancel;
  {
    std::unique_lock lock(mu_);
    for (const auto& id : pending_cancels_) {
      const Job& j = jobs_.at(id);
      if (!is_terminal(j.state) && j.pid > 0) to_cancel.push_back(handle_of(j));
    }
    pending_cancels_.clear();
    for (const auto& [id, j] : jobs_)
      if (j.state == JobState::kRunning || submitted(j))
        running.push_back({id, handle_of(j), j.cancel_requested, j.cancel_ms});
  }
  // /proc scans, waitid and Slurm commands happen outside the lock; only state changes take it.
  for (const auto& h : to_cancel) launcher_->cancel(h, false);
  for (const auto& r : running) {
    try {  // one job that cannot be updated must not stop the tick for every other job
      if (auto ex = launcher_->poll(r.h)) {
        finish(r.id, *ex);
        continue;
      }
      update_live(r.id, launcher_->live_info(r.h));
      if (r.cancel_requested && now_ms() - r.cancel_ms > opts_.cancel_grace_ms) {
        launcher_->cancel(r.h, true);
      }
    } catch (const std::exception& e) {
      spdlog::error("job {}: {}", r.id, e.what());
    }
  }
  std::vector<LaunchSpec> pending;
  {
    std::unique_lock lock(mu_);
    // [Restarts] Due relaunches first: they hold their slots already, so they never wait in the queue.
    const int64_t now = now_ms();
    for (const auto& [seq, id] : order_) {
      Job& j = jobs_.at(id);
      if (j.state != JobState::kRestarting || j.restart_due_ms > now) continue;
      if (!fit_restart_locked(j)) continue;
      spdlog::info("job {}: restart {} of {} (--resume) on {} ranks", id, j.attempts.size(), j.max_restarts,
                   j.world_size);
      if (auto spec = prepare_launch_locked(j, true)) pending.push_back(std::move(*spec));
    }
    auto queued = schedule_locked();
    pending.insert(pending.end(), queued.begin(), queued.end());
  }
  for (const auto& spec : pending) launch(spec);
}

}  // namespace rx::coord
