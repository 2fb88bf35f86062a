// [JobService: faults] What the coordinator makes of a job's failure evidence: hang reports (stored by
// report(), summarised here for the job's error and log), the result a worker left in its folder when
// its result report could not be delivered (coordinator down or restarted), and the restart decision.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "common/config/job_config.h"
#include "common/util/file_util.h"
#include "coordinator/jobs/job_service.h"
#include "coordinator/util/util.h"

namespace rx::coord {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// A report comes from the network, a log line from the job's processes: their strings go into a log
// line and the job's record only printable, bounded and valid UTF-8 ([Foreign text]), so they can
// neither forge further log lines nor make the record unwritable.
std::string clean(const json& v, size_t cap = 120) {
  return printable_utf8(v.is_string() ? v.get<std::string>()
                        : v.is_null() ? std::string()
                                      : dump_json(v),
                        cap);
}

std::string rank_list(const json& ranks) {
  std::string out = "[";
  for (const auto& r : ranks) out += (out.size() > 1 ? ", " : "") + clean(r, 12);
  return out + "]";
}

// The ranks to blame: those that never entered the stuck collective, or, when every rank entered it
// (the stop came after a rank had posted its part of a non-blocking all-reduce), those whose
// heartbeat stopped.
json culprits(const json& rep) {
  json missing = rep.value("missing", json::array());
  if (!missing.empty()) return missing;
  json out = json::array();
  for (const auto& r : rep.value("ranks", json::array()))
    if (r.is_object() && r.contains("rank") && r.value("responding", true) == false) out.push_back(r["rank"]);
  return out;
}

}  // namespace

std::string JobService::hang_summary(const json& rep) {
  const json c = rep.value("collective", json::object());
  std::string what = "collective #" + clean(c.value("seq", json(nullptr)), 20);
  if (c.contains("kind")) what += " (" + clean(c["kind"], 40) + ")";
  const json missing = rep.value("missing", json::array());
  std::string s = !missing.empty()
                      ? "hang: ranks " + rank_list(missing) + " never entered " + what
                      : "hang: " + what + " stuck with every rank in it; not responding: ranks " +
                            rank_list(culprits(rep));
  s += "; detected by rank " + clean(rep.value("detected_by", json(nullptr)), 12);
  if (rep.contains("waited_s") && rep["waited_s"].is_number()) {
    const auto tenths = static_cast<int64_t>(rep["waited_s"].get<double>() * 10 + 0.5);
    s += " after " + std::to_string(tenths / 10) + "." + std::to_string(tenths % 10) + " s";
  }
  return s;
}

std::string JobService::hang_log_line(const json& rep) {
  std::string s = "[coordinator] " + hang_summary(rep);
  const json blamed = culprits(rep);
  for (const auto& r : rep.value("ranks", json::array())) {
    if (!r.is_object() || !r.contains("rank") ||
        std::find(blamed.begin(), blamed.end(), r["rank"]) == blamed.end())
      continue;
    s += "; rank " + clean(r["rank"], 12) + ": pid " + clean(r.value("pid", json(nullptr)), 20) + " on " +
         clean(r.value("host", json(nullptr)), 64) + ", process " +
         clean(r.value("process", json(nullptr)), 20) + ", last seen " +
         clean(r.value("last_seen", json(nullptr)), 160);
  }
  return s;
}

void JobService::append_job_log(const std::string& id, const std::string& line) const {
  // worker.log is also appended to by the job's processes (O_APPEND): one write of one whole line.
  std::ofstream out(job_dir(id) + "/worker.log", std::ios::app | std::ios::binary);
  out << line + "\n" << std::flush;
  if (!out) spdlog::warn("job {}: cannot append to {}/worker.log", id, job_dir(id));
}

std::optional<json> JobService::result_from_folder(const Job& job) const {
  const std::string path = job_dir(job.id) + "/run/result.json";
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return std::nullopt;
  constexpr uintmax_t kMaxBytes = 16u << 20;  // a run record is kilobytes; anything huge is not one
  if (fs::file_size(path, ec) > kMaxBytes || ec) return std::nullopt;
  json r;
  try {
    r = json::parse(read_file(path), nullptr, false);
  } catch (const std::exception& e) {
    spdlog::warn("job {}: cannot read {}: {}", job.id, path, e.what());
    return std::nullopt;
  }
  // Only a success of this very job counts: a hung run writes status "failed"; a record whose config
  // is not the job's (a stale folder, a hand edit) or does not match its own hash is ignored.
  if (!r.is_object() || r.value("status", "") != "succeeded") return std::nullopt;
  if (!r.contains("config") || !r["config"].is_object() || !r.contains("config_sha256") ||
      r["config_sha256"] != config::config_hash(r["config"]) ||
      config::without_launch_keys(r["config"]) != config::without_launch_keys(job.config)) {
    spdlog::warn("job {}: {} is not a record of this job's config; ignored", job.id, path);
    return std::nullopt;
  }
  return r;
}

void JobService::fail_attempt_locked(Job& u, std::string cause) {
  if (const std::string err = first_worker_error(u); !err.empty()) cause += "; " + err;
  if (u.hang.is_object()) cause += "; " + hang_summary(u.hang);
  if (!end_attempt_locked(u, cause, true)) {
    u.state = JobState::kFailed;
    u.error = cause;
  }
}

bool JobService::end_attempt_locked(Job& u, const std::string& cause, bool may_restart) {
  const int64_t now = now_ms();
  if (!u.attempts.empty() && u.attempts.back().value("ended_ms", int64_t{0}) == 0) {
    json& a = u.attempts.back();
    a["ended_ms"] = now;
    a["cause"] = cause;
    a["exit_code"] = u.exit_code ? json(*u.exit_code) : json(nullptr);
  }
  const int used = u.attempts.empty() ? 0 : static_cast<int>(u.attempts.size()) - 1;
  if (!may_restart || u.cancel_requested || used >= u.max_restarts) return false;
  // Backoff 2 s, 4 s, 8 s, ... capped at 30 s: long enough for a dying rank's port and files to be
  // released, short against a training run.
  const int64_t backoff = std::min<int64_t>(30000, opts_.restart_backoff_ms << std::min(used, 4));
  u.state = JobState::kRestarting;
  u.restart_due_ms = now + backoff;
  u.error = "restarting after: " + cause;
  u.finished_ms = 0;
  u.exit_code.reset();
  u.pid = u.pgid = 0;
  u.proc_start = 0;
  u.hang = nullptr;  // kept in the reports table and in the attempt's cause
  spdlog::warn("job {}: attempt {} failed ({}); restarting in {} ms", u.id, used, cause, backoff);
  return true;
}

bool JobService::fit_restart_locked(Job& j) {
  const int want = requested_ranks(j);
  const int min_ranks = j.min_ranks > 0 ? std::min(j.min_ranks, want) : want;
  // A restarting job holds its slots (world_size of its last attempt); they count as free for it.
  const int free = opts_.slots - (busy_slots_locked() - j.world_size);
  const int n = std::min(want, free);
  if (n >= min_ranks) {
    if (n != j.world_size) {
      spdlog::warn("job {}: relaunching on {} ranks (asked for {}, min_ranks {}; {} slots free)", j.id, n,
                   want, min_ranks, free);
      Job u = j;
      u.world_size = n;
      commit(j, u);
    }
    return true;
  }
  if (min_ranks <= opts_.slots) return false;  // slots may free up (another job ends): retried next tick
  Job u = j;
  u.state = JobState::kFailed;
  u.finished_ms = now_ms();
  u.error = "cannot restart: needs at least " + std::to_string(min_ranks) + " ranks (min_ranks) and the " +
            "coordinator has " + std::to_string(opts_.slots) + " slots";
  spdlog::error("job {}: {}", j.id, u.error);
  commit(j, u);
  return false;
}

std::string JobService::newest_checkpoint(const std::string& id) const {
  // [Verified resume point] The worker's CheckpointStore writes <output.dir>/checkpoints/ckpt-<step>.pt
  // and then ckpt-<step>.json holding the .pt's SHA-256; on --resume it loads the newest pair that
  // verifies and skips corrupt ones. The same check here, so the attempt's `resumed_from` names the
  // checkpoint the worker will actually use, not a corrupt newer one. (Runs under mu_ at a relaunch
  // only; checkpoints of the models here are a few MB, hashed in milliseconds.)
  const std::string dir = job_dir(id) + "/run/checkpoints";
  std::error_code ec;
  std::vector<int64_t> steps;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.rfind("ckpt-", 0) != 0 || it->path().extension() != ".json") continue;
    try {
      steps.push_back(std::stoll(name.substr(5, name.size() - 10)));
    } catch (const std::exception&) {
    }
  }
  std::sort(steps.rbegin(), steps.rend());
  for (int64_t step : steps) {
    const std::string base = dir + "/ckpt-" + std::to_string(step);
    try {
      const json meta = json::parse(read_file(base + ".json"), nullptr, false);
      if (!meta.is_object() || !meta.contains("pt_sha256") || !meta["pt_sha256"].is_string()) continue;
      if (sha256_hex(read_file(base + ".pt")) != meta["pt_sha256"].get<std::string>()) {
        spdlog::warn("job {}: checkpoint {}.pt does not match its checksum; not a resume point", id, base);
        continue;
      }
      return "checkpoints/ckpt-" + std::to_string(step) + ".pt";
    } catch (const std::exception& e) {
      spdlog::warn("job {}: checkpoint {}: {}", id, base, e.what());
    }
  }
  return std::string();
}

std::string JobService::first_worker_error(const Job& job) const {
  // [Failure reason] The worker logs its fatal error (a corrupt data file names the file and offset)
  // as "[rank R] [error] ..." in worker.log before it aborts; mpirun's own exit says only "status 1".
  // The first such line of this attempt (from the log size recorded at its launch) is the cause; the
  // ranks that die after it only say they lost a peer.
  const std::string path = job_dir(job.id) + "/worker.log";
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::string();
  const int64_t from = job.attempts.empty() ? 0 : job.attempts.back().value("log_offset", int64_t{0});
  in.seekg(from);
  constexpr size_t kMaxScan = 4u << 20;  // a log is read at most this far past the attempt's start
  size_t scanned = 0;
  std::string line;
  while (scanned < kMaxScan && std::getline(in, line)) {
    scanned += line.size() + 1;
    const auto at = line.find("] [error] ");
    if (at == std::string::npos) continue;
    const auto rank = line.find("[rank ");
    std::string who = rank != std::string::npos && rank < at
                          ? printable_utf8(line.substr(rank + 1, at - rank - 1), 40) + ": "
                          : "";
    return who + printable_utf8(line.substr(at + 10), 400);
  }
  return std::string();
}

}  // namespace rx::coord
