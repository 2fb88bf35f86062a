// [JobService: submission] Validation of POST /v1/jobs (fields, limits, presets, overrides, paths),
// idempotent retries, and the insert that queues the job.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <mutex>
#include <regex>

#include "common/config/job_config.h"
#include "common/util/error.h"
#include "common/util/file_util.h"
#include "coordinator/jobs/api_error.h"
#include "coordinator/jobs/job_service.h"
#include "coordinator/jobs/scheduler.h"
#include "coordinator/util/util.h"

namespace rx::coord {

namespace fs = std::filesystem;
using nlohmann::json;

json JobService::load_config(const json& config_field) const {
  if (config_field.is_object()) return config_field;
  if (!config_field.is_string())
    throw ApiError(400, "invalid_field", "must be an object or a preset name", "config");
  const std::string name = config_field.get<std::string>();
  static const std::regex kPreset("^[A-Za-z0-9_-]{1,100}$");
  if (!std::regex_match(name, kPreset))
    throw ApiError(400, "invalid_field", "preset names are [A-Za-z0-9_-]+", "config");
  const std::string path = opts_.configs_dir + "/" + name + ".json";
  if (!fs::exists(path)) throw ApiError(400, "unknown_preset", "no preset named '" + name + "'", "config");
  json j = json::parse(read_file(path), nullptr, false);
  if (j.is_discarded() || !j.is_object())
    throw ApiError(500, "bad_preset", "preset " + path + " is not a JSON object");
  return j;
}

SubmitOutcome JobService::submit(const std::string& owner, const json& body, const std::string& idem_key) {
  if (!body.is_object()) throw ApiError(400, "invalid_body", "body must be a JSON object");
  for (auto it = body.begin(); it != body.end(); ++it)
    if (it.key() != "name" && it.key() != "ranks" && it.key() != "config" && it.key() != "overrides" &&
        it.key() != "max_restarts" && it.key() != "min_ranks")
      throw ApiError(400, "unknown_field", "unknown field '" + it.key() + "'", it.key());
  if (idem_key.size() > 200)
    throw ApiError(400, "invalid_header", "Idempotency-Key too long", "Idempotency-Key");
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
                   "needs " + std::to_string(ranks) + " ranks; at most " +
                       std::to_string(opts_.limits.max_ranks) + " per job (serve --max-ranks)",
                   "ranks");
  if (!fits_capacity(static_cast<int>(std::min<int64_t>(ranks, 1 << 30)), opts_.slots))
    throw ApiError(
        400, "exceeds_capacity",
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
  // Read exactly as the worker will read it (typed, every field checked), so a config the worker
  // would refuse is refused here, naming its key, instead of failing the job after launch.
  config::JobSpec spec;
  try {
    spec = config::from_json(load_config(body.at("config")), overrides);
  } catch (const ConfigError& e) {
    throw ApiError(400, "invalid_config", e.message(), e.field());
  }
  json resolved = config::to_json(spec);  // == resolve()'s document ([Job spec])
  opts_.paths.check(resolved, spec);      // 400 naming data.path / model.pretrained; 413 for a long string

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
  if (!launcher_->slow_commands()) pending = schedule_locked();
  lock.unlock();
  for (const auto& spec : pending) launch(spec);
  return {true, job.id, cached(job.id)};
}

}  // namespace rx::coord
