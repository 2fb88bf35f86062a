#include "coordinator/jobs/job_service.h"

#include <unistd.h>

#include <algorithm>
#include <deque>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <regex>
#include <sstream>

#include <spdlog/spdlog.h>

#include "common/config/job_config.h"
#include "common/data/shard_plan.h"
#include "common/util/error.h"
#include "common/util/file_util.h"
#include "coordinator/jobs/api_error.h"
#include "coordinator/jobs/scheduler.h"
#include "coordinator/util/util.h"

namespace rx::coord {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// [Report types] A progress report is echoed in every job body (progress, loss, ranks), so its fields
// must have the documented types (api/openapi.yaml ProgressReport), or GET /v1/jobs answers bodies
// that break the API's own schema (found by the contract test, tests/contract).
void check_number(const json& b, const char* k, bool integer, const std::string& field) {
  if (!b.contains(k) || b.at(k).is_null()) return;
  if (integer ? b.at(k).is_number_integer() : b.at(k).is_number()) return;
  throw ApiError(400, "invalid_field", integer ? "must be an integer or null" : "must be a number or null",
                 field);
}

void check_ranks(const json& b, const std::string& field) {
  if (!b.contains("ranks")) return;
  if (!b.at("ranks").is_array()) throw ApiError(400, "invalid_field", "must be an array", field);
  for (const auto& r : b.at("ranks")) {
    if (!r.is_object()) throw ApiError(400, "invalid_field", "must be an array of objects", field);
    check_number(r, "rank", true, field + "[].rank");
    check_number(r, "images_per_sec", false, field + "[].images_per_sec");
    check_number(r, "peak_memory_bytes", true, field + "[].peak_memory_bytes");
  }
}

// null where a number is documented: the worker's NaN (nlohmann dumps NaN as null).
void check_progress_report(const json& b) {
  for (const char* k : {"epoch", "epochs", "step", "steps_per_epoch"}) check_number(b, k, true, k);
  for (const char* k : {"loss", "test_accuracy"}) check_number(b, k, false, k);
  check_ranks(b, "ranks");
}

}  // namespace

JobService::JobService(ServiceOptions opts, std::unique_ptr<Launcher> launcher, Tokens tokens)
    : opts_(std::move(opts)), launcher_(std::move(launcher)), tokens_(std::move(tokens)) {
  RX_CHECK(opts_.slots >= 1, "slots must be >= 1");
  if (opts_.limits.max_ranks <= 0 || opts_.limits.max_ranks > opts_.slots) opts_.limits.max_ranks = opts_.slots;
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

void JobService::render(const Job& job) {
  auto body = std::make_shared<const std::string>(job_to_json(job).dump());
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
    if (launcher_->kind() == "slurm" && j.pid > 0) slot.slurm_job_id = std::to_string(j.pid);
    render(slot);
    if (j.state == JobState::kLaunching) {
      // The coordinator stopped between recording the launch and recording its outcome: adopt what
      // the launch left running, or fail the job. Never launch it again.
      LaunchSpec spec{id, job_dir(id), j.world_size, "", opts_.self_url};
      const int64_t since = !j.attempts.empty() ? j.attempts.back().value("started_ms", j.started_ms) : j.started_ms;
      auto h = launcher_->find_launched(spec, since);
      Job u = slot;
      if (h) {
        u.state = JobState::kRunning;
        u.pid = h->pid;
        u.pgid = h->pgid;
        u.proc_start = h->start_time;
        if (launcher_->kind() == "slurm") u.slurm_job_id = std::to_string(h->pid);
        spdlog::info("job {}: adopted processes (pid {}) of an interrupted launch", id, h->pid);
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
    if (launcher_->reattach(LaunchHandle{j.pid, j.pgid, j.proc_start})) {
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
      std::string cause = "coordinator restarted and the job's processes (pgid " + std::to_string(j.pgid) +
                          ") were gone; exit status unknown";
      if (const std::string err = first_worker_error(u); !err.empty()) cause += "; " + err;
      if (u.hang.is_object()) cause += "; " + hang_summary(u.hang);
      if (!end_attempt_locked(u, cause, true)) {
        u.state = JobState::kFailed;
        u.error = cause;
      }
    }
    if (is_terminal(u.state)) end_attempt_locked(u, u.state == JobState::kFailed ? u.error : to_string(u.state), false);
    commit(slot, u);
    spdlog::warn("job {}: not running after restart -> {}", id, to_string(u.state));
  }
}

json JobService::load_config(const json& config_field) const {
  if (config_field.is_object()) return config_field;
  if (!config_field.is_string()) throw ApiError(400, "invalid_field", "must be an object or a preset name", "config");
  const std::string name = config_field.get<std::string>();
  static const std::regex kPreset("^[A-Za-z0-9_-]{1,100}$");
  if (!std::regex_match(name, kPreset))
    throw ApiError(400, "invalid_field", "preset names are [A-Za-z0-9_-]+", "config");
  const std::string path = opts_.configs_dir + "/" + name + ".json";
  if (!fs::exists(path)) throw ApiError(400, "unknown_preset", "no preset named '" + name + "'", "config");
  json j = json::parse(read_file(path), nullptr, false);
  if (j.is_discarded() || !j.is_object()) throw ApiError(500, "bad_preset", "preset " + path + " is not a JSON object");
  return j;
}

SubmitOutcome JobService::submit(const std::string& owner, const json& body, const std::string& idem_key) {
  if (!body.is_object()) throw ApiError(400, "invalid_body", "body must be a JSON object");
  for (auto it = body.begin(); it != body.end(); ++it)
    if (it.key() != "name" && it.key() != "ranks" && it.key() != "config" && it.key() != "overrides" &&
        it.key() != "max_restarts" && it.key() != "min_ranks")
      throw ApiError(400, "unknown_field", "unknown field '" + it.key() + "'", it.key());
  if (idem_key.size() > 200) throw ApiError(400, "invalid_header", "Idempotency-Key too long", "Idempotency-Key");
  const std::string request_hash = sha256_hex(body.dump());
  // [Idempotency] The same key with the same body is a retry (answered with the first job); the same
  // key with another body is a client bug, refused rather than silently answered with the wrong job.
  auto retry = [&](const std::string& id) -> SubmitOutcome {
    const Job& j = jobs_.at(id);
    if (!j.request_hash.empty() && j.request_hash != request_hash)
      throw ApiError(409, "idempotency_key_reused",
                     "Idempotency-Key '" + idem_key + "' was used for job " + id +
                         " with a different request body; use a new key for a new job",
                     "Idempotency-Key");
    return {false, id, cached(id)};
  };
  {  // an idempotent retry is answered before validating anything else
    std::shared_lock lock(mu_);
    auto it = idempotency_.find(owner + "\n" + idem_key);
    if (!idem_key.empty() && it != idempotency_.end()) return retry(it->second);
  }

  if (!body.contains("ranks")) throw ApiError(400, "missing_field", "is required", "ranks");
  const json& r = body.at("ranks");
  if (!r.is_number_integer()) throw ApiError(400, "invalid_field", "must be an integer", "ranks");
  const int64_t ranks = r.get<int64_t>();
  if (ranks < 1) throw ApiError(400, "invalid_field", "must be >= 1", "ranks");
  if (ranks > opts_.limits.max_ranks)
    throw ApiError(400, "exceeds_capacity",
                   "needs " + std::to_string(ranks) + " ranks; at most " + std::to_string(opts_.limits.max_ranks) +
                       " per job (serve --max-ranks)",
                   "ranks");
  if (!fits_capacity(static_cast<int>(std::min<int64_t>(ranks, 1 << 30)), opts_.slots))
    throw ApiError(400, "exceeds_capacity",
                   "needs " + std::to_string(ranks) + " slots; the coordinator has " + std::to_string(opts_.slots),
                   "ranks");
  int max_restarts = 0;
  if (body.contains("max_restarts")) {
    const json& m = body.at("max_restarts");
    if (!m.is_number_integer() || m.get<int64_t>() < 0 || m.get<int64_t>() > kMaxRestarts)
      throw ApiError(400, "invalid_field", "must be an integer in [0, " + std::to_string(kMaxRestarts) + "]",
                     "max_restarts");
    max_restarts = m.get<int>();
  }
  int min_ranks = static_cast<int>(ranks);
  if (body.contains("min_ranks")) {
    const json& m = body.at("min_ranks");
    if (!m.is_number_integer() || m.get<int64_t>() < 1 || m.get<int64_t>() > ranks)
      throw ApiError(400, "invalid_field", "must be an integer in [1, ranks] (" + std::to_string(ranks) + ")",
                     "min_ranks");
    min_ranks = m.get<int>();
  }
  std::string name;
  if (body.contains("name")) {
    if (!body.at("name").is_string()) throw ApiError(400, "invalid_field", "must be a string", "name");
    name = body.at("name").get<std::string>();
    if (name.size() > 200) throw ApiError(400, "invalid_field", "at most 200 characters", "name");
  }
  if (!body.contains("config")) throw ApiError(400, "missing_field", "is required", "config");
  if (name.empty()) name = body.at("config").is_string() ? body.at("config").get<std::string>() : "job";
  std::vector<config::Override> overrides;
  if (body.contains("overrides")) {
    const json& o = body.at("overrides");
    if (!o.is_object()) throw ApiError(400, "invalid_field", "must be an object of dotted keys", "overrides");
    for (auto it = o.begin(); it != o.end(); ++it) overrides.push_back({it.key(), it.value()});
  }
  json resolved;
  try {
    resolved = config::resolve(load_config(body.at("config")), overrides);
  } catch (const ConfigError& e) {
    throw ApiError(400, "invalid_config", e.message(), e.field());
  }
  opts_.paths.check(resolved);  // 400 naming data.path / model.pretrained; 413 for an over-long string

  Job job;
  job.id = "j" + random_hex(6);
  job.name = name;
  job.owner = owner;
  job.world_size = static_cast<int>(ranks);
  job.config = std::move(resolved);
  job.idempotency_key = idem_key;
  job.request_hash = request_hash;
  job.max_restarts = max_restarts;
  job.min_ranks = min_ranks;
  job.created_ms = now_ms();

  std::unique_lock lock(mu_);
  if (!idem_key.empty()) {  // lost a race with a concurrent retry
    auto it = idempotency_.find(owner + "\n" + idem_key);
    if (it != idempotency_.end()) return retry(it->second);
  }
  int queued = 0;
  for (const auto& [jid, j] : jobs_) queued += j.owner == owner && j.state == JobState::kQueued;
  if (queued >= opts_.limits.max_queued_per_owner)
    throw ApiError(429, "too_many_queued",
                   owner + " already has " + std::to_string(queued) + " queued jobs (limit " +
                       std::to_string(opts_.limits.max_queued_per_owner) +
                       ", serve --max-queued-per-owner); wait for some to start or cancel them");
  store_->insert(job);
  order_[job.seq] = job.id;
  if (!idem_key.empty()) idempotency_[owner + "\n" + idem_key] = job.id;
  Job& slot = jobs_[job.id];
  slot = job;
  render(slot);
  spdlog::info("job {} submitted by {}: {} ranks, name '{}'", job.id, owner, job.world_size, job.name);
  // [Slow launchers] sbatch may take seconds: a Slurm job is started by the next tick (its own thread),
  // never on the I/O thread that answers this request. A local fork+exec is quick and starts here.
  std::vector<LaunchSpec> pending;
  if (launcher_->kind() != "slurm") pending = schedule_locked();
  lock.unlock();
  for (const auto& spec : pending) launch(spec);
  return {true, job.id, cached(job.id)};
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

json JobService::list(std::optional<JobState> state, size_t limit, size_t offset, const Principal* who) const {
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
  if (!visible(who, slot)) throw ApiError(403, "forbidden", "job '" + id + "' belongs to " + slot.owner);
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
    if (u.pid > 0 && launcher_->kind() == "slurm") {
      pending_cancels_.push_back(id);  // scancel from the tick thread, never an I/O thread
    } else if (u.pid > 0) {
      lock.unlock();
      launcher_->cancel(LaunchHandle{u.pid, u.pgid, u.proc_start}, false);
    }
  }
  return cached(id);
}

void JobService::check_job_secret(const std::string& id, const std::string& secret) const {
  std::shared_lock lock(mu_);
  const Job& j = find_or_404(id);
  if (j.secret_hash.empty() || !ct_equal(sha256_hex(secret), j.secret_hash))
    throw ApiError(401, "unauthorized", "missing or wrong X-Job-Secret", "X-Job-Secret");
}

void JobService::report(const std::string& id, const std::string& secret, const json& body) {
  std::unique_lock lock(mu_);
  Job& slot = find_or_404(id);
  if (slot.secret_hash.empty() || !ct_equal(sha256_hex(secret), slot.secret_hash))
    throw ApiError(401, "unauthorized", "missing or wrong X-Job-Secret");
  // [Report bounds] A job that ended takes no more reports (its record is final); a running one
  // gets a bounded number of bounded reports, so a leaked secret cannot fill the disk.
  if (is_terminal(slot.state))
    throw ApiError(409, "job_ended", "job '" + id + "' already " + to_string(slot.state) + "; reports are closed");
  if (slot.reports >= opts_.limits.max_reports_per_job)
    throw ApiError(429, "too_many_reports",
                   "job '" + id + "' already sent " + std::to_string(slot.reports) +
                       " reports (serve --max-reports-per-job)");
  if (const size_t n = body.dump().size(); n > opts_.limits.max_report_bytes)
    throw ApiError(413, "report_too_large",
                   "report is " + std::to_string(n) + " bytes; at most " +
                       std::to_string(opts_.limits.max_report_bytes) + " (serve --max-report-bytes)");
  if (!body.is_object() || !body.contains("type") || !body.at("type").is_string())
    throw ApiError(400, "invalid_field", "must be \"progress\", \"result\" or \"hang\"", "type");
  const std::string type = body.at("type").get<std::string>();
  Job u = slot;
  if (type == "progress") {
    check_progress_report(body);
    u.last_progress = body;
  } else if (type == "result") {
    if (!body.contains("record") || !body.at("record").is_object())
      throw ApiError(400, "invalid_field", "must be an object", "record");
    check_number(body.at("record"), "final_test_accuracy", false, "record.final_test_accuracy");
    check_ranks(body.at("record"), "record.ranks");
    u.result = body.at("record");
  } else if (type == "hang") {
    // [Hang reports] Sent by whichever rank's watchdog noticed the stuck collective (any rank, the job
    // secret is shared). The last one wins (a restarted attempt may hang again); every one stays in
    // the reports table. The processes end on their own (the worker aborts after reporting).
    if (!body.contains("report") || !body.at("report").is_object())
      throw ApiError(400, "invalid_field", "must be an object", "report");
    const json& rep = body.at("report");
    if (!rep.contains("missing") || !rep.at("missing").is_array())
      throw ApiError(400, "invalid_field", "must be an array of rank numbers", "report.missing");
    for (const auto& m : rep.at("missing"))
      if (!m.is_number_integer() || m.get<int64_t>() < 0 || m.get<int64_t>() >= u.world_size)
        throw ApiError(400, "invalid_field",
                       "must hold rank numbers in [0, " + std::to_string(u.world_size) + ")", "report.missing");
    u.hang = rep;
  } else {
    throw ApiError(400, "invalid_field", "must be \"progress\", \"result\" or \"hang\"", "type");
  }
  ++u.reports;
  store_->append_report(u, now_ms(), body.dump());
  slot = u;
  render(slot);
  if (type == "hang") append_job_log(id, hang_log_line(u.hang));
}

json JobService::metrics(const std::string& id) {
  std::unique_lock lock(mu_);  // the store is single-connection
  find_or_404(id);
  json points = json::array();
  for (const auto& [ms, text] : store_->reports(id)) {
    json b = json::parse(text, nullptr, false);
    if (!b.is_object() || b.value("type", "") != "progress") continue;
    b.erase("type");
    b["received_at"] = iso8601(ms);
    points.push_back(std::move(b));
  }
  return json{{"job_id", id}, {"points", points}};
}

json JobService::result(const std::string& id) const {
  std::shared_lock lock(mu_);
  const Job& j = find_or_404(id);
  if (!j.result.is_object()) throw ApiError(404, "no_result", "job '" + id + "' has no result yet");
  return j.result;
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
    write_file_atomic(dir + "/config.json", u.config.dump(2) + "\n");
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
    u.pid = h->pid;
    u.pgid = h->pgid;
    u.proc_start = h->start_time;
    if (launcher_->kind() == "slurm") u.slurm_job_id = std::to_string(h->pid);
    u.state = JobState::kRunning;
    spdlog::info("job {}: started, pid {} ({} ranks)", u.id, h->pid, u.world_size);
    if (u.cancel_requested && launcher_->kind() == "slurm")
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
  const bool maybe_ok =
      ex.exit_code ? *ex.exit_code == 0 : ex.reason.rfind("exit status unknown", 0) == 0;
  if (!u.result.is_object() && !u.cancel_requested && !ex.cancelled && maybe_ok)
    if (auto r = result_from_folder(u)) u.result = std::move(*r);
  if (u.cancel_requested || ex.cancelled) {
    u.state = JobState::kCancelled;
  } else if (ex.exit_code && *ex.exit_code == 0) {
    u.state = JobState::kSucceeded;
  } else if (!ex.exit_code && ex.reason.rfind("exit status unknown", 0) == 0 && u.result.is_object()) {
    u.state = JobState::kSucceeded;
  } else {
    std::string cause = ex.reason.empty() ? "worker failed" : ex.reason;
    if (const std::string err = first_worker_error(u); !err.empty()) cause += "; " + err;
    if (u.hang.is_object()) cause += "; " + hang_summary(u.hang);
    if (!end_attempt_locked(u, cause, true)) {
      u.state = JobState::kFailed;
      u.error = cause;
    }
  }
  if (is_terminal(u.state)) end_attempt_locked(u, u.state == JobState::kFailed ? u.error : to_string(u.state), false);
  commit(slot, u);
  spdlog::info("job {}: {} (exit {})", id, to_string(u.state), ex.exit_code ? std::to_string(*ex.exit_code) : "?");
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
      if (!is_terminal(j.state) && j.pid > 0) to_cancel.push_back({j.pid, j.pgid, j.proc_start});
    }
    pending_cancels_.clear();
    for (const auto& [id, j] : jobs_)
      if (j.state == JobState::kRunning || submitted(j))
        running.push_back({id, {j.pid, j.pgid, j.proc_start}, j.cancel_requested, j.cancel_ms});
  }
  // /proc scans, waitid and Slurm commands happen outside the lock; only state changes take it.
  for (const auto& h : to_cancel) launcher_->cancel(h, false);
  for (const auto& r : running) {
    if (auto ex = launcher_->poll(r.h)) {
      finish(r.id, *ex);
      continue;
    }
    update_live(r.id, launcher_->live_info(r.h));
    if (r.cancel_requested && now_ms() - r.cancel_ms > opts_.cancel_grace_ms) {
      launcher_->cancel(r.h, true);
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

std::string JobService::prometheus() const {
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
    if (j.state != JobState::kRunning) continue;
    double ips = 0;
    if (j.last_progress.is_object() && j.last_progress.contains("ranks") && j.last_progress["ranks"].is_array())
      for (const auto& r : j.last_progress["ranks"])
        if (r.is_object() && r.contains("images_per_sec") && r["images_per_sec"].is_number())
          ips += r["images_per_sec"].get<double>();
    os << "rx_job_images_per_second{job=\"" << id << "\"} " << ips << "\n";
  }
  return os.str();
}

}  // namespace rx::coord
