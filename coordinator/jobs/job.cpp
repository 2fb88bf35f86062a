#include "coordinator/jobs/job.h"

#include "coordinator/jobs/rank_view.h"
#include "coordinator/util/util.h"

namespace rx::coord {

std::string to_string(JobState s) {
  switch (s) {
    case JobState::kQueued:
      return "queued";
    case JobState::kLaunching:
      return "launching";
    case JobState::kRunning:
      return "running";
    case JobState::kRestarting:
      return "restarting";
    case JobState::kSucceeded:
      return "succeeded";
    case JobState::kFailed:
      return "failed";
    case JobState::kCancelled:
      return "cancelled";
  }
  return "unknown";
}

std::optional<JobState> parse_job_state(const std::string& s) {
  for (auto st : {JobState::kQueued, JobState::kLaunching, JobState::kRunning, JobState::kRestarting,
                  JobState::kSucceeded, JobState::kFailed, JobState::kCancelled})
    if (to_string(st) == s) return st;
  return std::nullopt;
}

int requested_ranks(const Job& job) {
  if (job.attempts.is_array() && !job.attempts.empty() && job.attempts[0].is_object())
    return job.attempts[0].value("world_size", job.world_size);
  return job.world_size;
}

nlohmann::json job_to_json(const Job& job) {
  using nlohmann::json;
  auto ts = [](int64_t ms) { return ms > 0 ? json(iso8601(ms)) : json(nullptr); };
  const json& p = job.last_progress;
  auto pget = [&](const char* k) { return p.is_object() && p.contains(k) ? p.at(k) : json(nullptr); };
  json progress = {{"epoch", pget("epoch")},
                   {"epochs", pget("epochs")},
                   {"step", pget("step")},
                   {"steps_per_epoch", pget("steps_per_epoch")}};
  json loss = pget("loss");
  json acc = pget("test_accuracy");
  json ranks = rank_entries(p.is_object() && p.contains("ranks") ? p.at("ranks") : json());
  // The final record wins over the last progress report once it exists.
  if (job.result.is_object()) {
    if (job.result.contains("final_test_accuracy")) acc = job.result.at("final_test_accuracy");
    if (job.result.contains("ranks") && job.result.at("ranks").is_array())
      ranks = rank_entries(job.result.at("ranks"));
  }
  json attempts = json::array();
  for (const auto& a : job.attempts) {
    if (!a.is_object()) continue;
    attempts.push_back({{"attempt", a.value("attempt", 0)},
                        {"started_at", ts(a.value("started_ms", int64_t{0}))},
                        {"ended_at", ts(a.value("ended_ms", int64_t{0}))},
                        {"cause", a.value("cause", json(nullptr))},
                        {"exit_code", a.value("exit_code", json(nullptr))},
                        {"resumed_from", a.value("resumed_from", json(nullptr))},
                        {"world_size", a.value("world_size", json(nullptr))}});
  }
  return json{{"id", job.id},
              {"name", job.name},
              {"state", to_string(job.state)},
              {"world_size", job.world_size},
              {"created_at", ts(job.created_ms)},
              {"started_at", ts(job.started_ms)},
              {"finished_at", ts(job.finished_ms)},
              {"progress", progress},
              {"loss", loss},
              {"test_accuracy", acc},
              {"ranks", ranks},
              {"nodes", node_entries(ranks)},
              {"exit_code", job.exit_code ? json(*job.exit_code) : json(nullptr)},
              {"error", job.error.empty() ? json(nullptr) : json(job.error)},
              {"owner", job.owner},
              {"hang", job.hang.is_object() ? job.hang : json(nullptr)},
              {"max_restarts", job.max_restarts},
              {"min_ranks", job.min_ranks > 0 ? job.min_ranks : job.world_size},
              {"restarts", attempts.empty() ? 0 : static_cast<int>(attempts.size()) - 1},
              {"attempts", attempts},
              {"slurm_job_id", job.slurm_job_id.empty() ? json(nullptr) : json(job.slurm_job_id)}};
}

}  // namespace rx::coord
