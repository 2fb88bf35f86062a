#pragma once
// [JobService] The coordinator's state machine: jobs (in memory, written through to JobStore), the
// FIFO scheduler over slots, the launcher, and the per-job secrets. All mutations take an exclusive
// lock and commit to SQLite before returning; GET /v1/jobs/{id} takes a shared lock and returns a
// pre-serialised body (re-rendered on every change), so the hot read path never touches SQLite.
// Its members live in one file per concern: job_service.cpp (state machine, scheduling),
// job_submit.cpp (submission validation), job_store_sync.cpp (commit, render, recover),
// job_files.cpp (reports, results, logs), job_metrics.cpp (Prometheus text), job_data.cpp (shards),
// job_faults.cpp (restarts, failure reasons).
#include <atomic>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/config/job_spec.h"
#include "common/data/dataset.h"
#include "coordinator/jobs/job.h"
#include "coordinator/jobs/job_store.h"
#include "coordinator/jobs/path_policy.h"
#include "coordinator/jobs/tokens.h"
#include "coordinator/launch/launcher.h"

namespace rx::coord {

// [Limits] Per-owner and per-job bounds (serve flags in parentheses); exceeding one is a 429 or 413
// with a message naming the limit and its flag.
struct Limits {
  int max_queued_per_owner = 100;       // (--max-queued-per-owner) queued jobs per owner -> 429
  int max_ranks = 0;                    // (--max-ranks) ranks per job; 0 = slots; > max -> 400
  int64_t max_reports_per_job = 20000;  // (--max-reports-per-job) -> 429
  size_t max_report_bytes = 256 << 10;  // (--max-report-bytes) one report body -> 413
  size_t max_log_bytes = 1 << 20;       // (--max-log-bytes) a logs response keeps the newest bytes
};

struct ServiceOptions {
  std::string state_dir;  // holds jobs.db and jobs/<id>/
  int slots = 1;
  std::string configs_dir;            // presets: <configs_dir>/<name>.json
  std::string self_url;               // what workers use to reach us (set once the port is bound)
  int64_t cancel_grace_ms = 10000;    // SIGTERM -> SIGKILL
  int64_t restart_backoff_ms = 2000;  // [Restarts] first relaunch delay, doubling, capped at 30 s
  PathPolicy paths;                   // where data.path / model.pretrained may point; string bounds
  Limits limits;
};

// The bytes of a rank's static block in the dataset's own format (data.source "coordinator").
struct ShardData {
  std::string body;
  std::string sha256;  // of body
  std::string format;  // "idx-images" | "idx-labels" | "cifar10" | "cifar100"
  int64_t begin = 0, end = 0, dataset_size = 0;
};

struct SubmitOutcome {
  bool created = false;  // false: an idempotent retry returned the existing job
  std::string id;
  std::shared_ptr<const std::string> body;
};

class JobService {
 public:
  static constexpr int kMaxRestarts = 100;  // bound on a submission's max_restarts

  JobService(ServiceOptions opts, std::unique_ptr<Launcher> launcher, Tokens tokens = Tokens());

  void set_self_url(const std::string& url);
  // Loads every job; running ones are re-attached if their processes live, else marked failed.
  void recover();

  const Tokens& tokens() const { return tokens_; }
  int slots() const { return opts_.slots; }

  SubmitOutcome submit(const std::string& owner, const nlohmann::json& body,
                       const std::string& idempotency_key);
  std::shared_ptr<const std::string> job_body(const std::string& id) const;  // null when unknown
  // 404 unless `who` may read job `id` (its owner, an admin, or anyone with auth off).
  void check_visible(const Principal& who, const std::string& id) const;
  // who == nullptr: every job; else only the jobs `who` may read.
  nlohmann::json list(std::optional<JobState> state, size_t limit, size_t offset,
                      const Principal* who = nullptr) const;
  std::shared_ptr<const std::string> cancel(const std::string& owner, const std::string& id);
  std::shared_ptr<const std::string> cancel(const Principal& who, const std::string& id);
  void report(const std::string& id, const std::string& secret, const nlohmann::json& body);
  void check_job_secret(const std::string& id,
                        const std::string& secret) const;  // 401: no such job or secret
  nlohmann::json metrics(const std::string& id);
  nlohmann::json result(const std::string& id) const;
  std::string logs(const std::string& id, int tail) const;  // at most limits.max_log_bytes (newest kept)
  // The index plan; the dataset size always comes from the job's own data (never from the caller).
  nlohmann::json shard(const std::string& id, int rank, int64_t epoch);
  // part: "images" | "labels" for IDX datasets, ignored (records) for CIFAR. 401 on a wrong secret,
  // 409 when the job reads a shared dataset.
  // The rank's static block of the train split (or, with `test`, of the test split, which is how a
  // worker without a local copy gets its part of the evaluation).
  ShardData shard_data(const std::string& id, const std::string& secret, int rank, const std::string& part,
                       bool test = false);
  std::optional<Job> get(const std::string& id) const;  // a copy (tests, CLI)
  std::string job_dir(const std::string& id) const;
  size_t cached_datasets();  // datasets held for shard serving (tests)

  // Reaps finished jobs, escalates overdue cancels, starts queued jobs that fit. Call periodically.
  void tick();

  // Job and slot gauges (the router appends the HTTP metrics). The per-job series cover only the jobs
  // `who` may read; the totals by state and slot name no job, so every user gets them.
  std::string prometheus(const Principal& who) const;

 private:
  Job& find_or_404(const std::string& id);
  const Job& find_or_404(const std::string& id) const;
  void commit(Job& slot, const Job& updated);  // store.update + in-memory + cache
  void render(const Job& job);
  // Picks queued jobs that fit and records each as launching; the caller launches them after
  // releasing mu_.
  std::vector<LaunchSpec> schedule_locked();
  std::optional<LaunchSpec> prepare_launch_locked(Job& job, bool resume = false);
  // [Restarts] Closes the current attempt with `cause`; if the job has restarts left, turns `u` into
  // kRestarting (due after a backoff) and returns true, else leaves it for the caller to fail.
  bool end_attempt_locked(Job& u, const std::string& cause, bool may_restart);
  // A failed attempt: `cause` gains the ranks' first error line and the hang summary, then the job
  // restarts if it may, else it is failed with that cause.
  void fail_attempt_locked(Job& u, std::string cause);
  // [Fewer ranks] Sizes a due relaunch to the free slots (the job's own included): the ranks it asked
  // for if they are free, else as many as are free if that is >= min_ranks. False: not now (it stays
  // restarting and is retried next tick) or never (then `j` is failed, naming min_ranks).
  bool fit_restart_locked(Job& j);
  std::string newest_checkpoint(const std::string& id) const;  // newest that verifies; "" if none
  // The first "[error]" line the job's ranks logged during the current attempt ("" if none).
  std::string first_worker_error(const Job& job) const;
  void launch(const LaunchSpec& spec);  // without mu_ held
  // [Launch handle] The handle a job record stands for, and a handle written into a record (pid, pgid
  // and proc_start columns as before; slurm_job_id, which is derived, for a batch job).
  LaunchHandle handle_of(const Job& j) const { return launcher_->from_record(j.pid, j.proc_start); }
  static void record_handle(Job& j, const LaunchHandle& h);
  void finish(const std::string& id, const ExitInfo& ex);
  void update_live(const std::string& id, const LiveInfo& live);
  // queued in an external queue (handed to Slurm), as opposed to waiting for a slot here
  static bool submitted(const Job& j) { return j.state == JobState::kQueued && j.pid > 0; }
  int busy_slots_locked() const;
  nlohmann::json load_config(const nlohmann::json& config_field) const;
  // The job's config as typed fields (409 invalid_config if a stored row no longer reads).
  config::JobSpec spec_of(const Job& job) const;
  int64_t dataset_size_for(const config::JobSpec& spec) const;
  nlohmann::json compute_shard(const Job& job, int rank, int64_t epoch) const;
  bool visible(const Principal& who, const Job& j) const;
  // [Result on disk] <job dir>/run/result.json when it records a success of this job's config.
  std::optional<nlohmann::json> result_from_folder(const Job& job) const;
  void append_job_log(const std::string& id, const std::string& line) const;  // one line to worker.log
  static std::string hang_summary(const nlohmann::json& report);   // "hang: ranks [1] missing from ..."
  static std::string hang_log_line(const nlohmann::json& report);  // summary + where each was last seen

  std::shared_ptr<const data::Dataset> dataset(const std::string& format, const std::string& path,
                                               bool test = false);

  ServiceOptions opts_;
  // [Dataset cache] Keyed by format + canonical path + split, so spellings of one folder share a copy;
  // at most kMaxCachedDatasets are kept, the least recently used is dropped (jobs holding it keep theirs).
  static constexpr size_t kMaxCachedDatasets = 2;
  std::mutex data_mu_;  // guards datasets_ (loads happen under it: one load per dataset)
  std::list<std::pair<std::string, std::shared_ptr<const data::Dataset>>> datasets_;  // most recent first
  std::unique_ptr<Launcher> launcher_;
  Tokens tokens_;
  mutable std::shared_mutex mu_;
  std::unique_ptr<JobStore> store_;
  std::map<int64_t, std::string> order_;  // seq -> id
  std::unordered_map<std::string, Job> jobs_;
  // [Read path] Rendered job bodies under their own lock, so a GET never waits behind a mutation that
  // holds mu_ across a SQLite commit (fsync); render() swaps in the new body after the commit.
  mutable std::shared_mutex cache_mu_;
  std::unordered_map<std::string, std::shared_ptr<const std::string>> cache_;
  std::shared_ptr<const std::string> cached(const std::string& id) const;
  std::unordered_map<std::string, std::string> idempotency_;  // owner \n key -> id
  std::vector<std::string> pending_cancels_;                  // Slurm jobs whose scancel the next tick sends
};

}  // namespace rx::coord
