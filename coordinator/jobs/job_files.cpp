// [JobService: job files] What running jobs send (progress, result, hang reports: type-checked and
// bounded) and what is read back from them: metrics points, the result, the tail of worker.log.
#include <algorithm>
#include <deque>
#include <fstream>
#include <mutex>
#include <utility>
#include <vector>

#include "coordinator/jobs/api_error.h"
#include "coordinator/jobs/job_service.h"
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

// A missing job answers as a wrong secret does: the secret routes do not tell a stranger which job ids
// exist.
void JobService::check_job_secret(const std::string& id, const std::string& secret) const {
  std::shared_lock lock(mu_);
  const auto it = jobs_.find(id);
  if (it == jobs_.end() || it->second.secret_hash.empty() ||
      !ct_equal(sha256_hex(secret), it->second.secret_hash))
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
    throw ApiError(409, "job_ended",
                   "job '" + id + "' already " + to_string(slot.state) + "; reports are closed");
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
                       "must hold rank numbers in [0, " + std::to_string(u.world_size) + ")",
                       "report.missing");
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
  std::vector<std::pair<int64_t, std::string>> rows;
  {
    // The store is single-connection, so it is read under the lock; the parsing (most of the time for
    // a job with thousands of reports) is done outside it, where it holds up no other request.
    std::unique_lock lock(mu_);
    find_or_404(id);
    rows = store_->reports(id);
  }
  json points = json::array();
  for (const auto& [ms, text] : rows) {
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

std::string JobService::logs(const std::string& id, int tail) const {
  {
    std::shared_lock lock(mu_);
    find_or_404(id);
  }
  // [Log tail] Read backwards in blocks until `tail` lines or max_log_bytes are covered: each block is
  // read and scanned once (linear in what is returned, whatever the line lengths), never the whole file.
  std::ifstream in(job_dir(id) + "/worker.log", std::ios::binary);
  if (!in) return "";
  in.seekg(0, std::ios::end);
  const int64_t size = in.tellg();
  const int64_t cap = static_cast<int64_t>(opts_.limits.max_log_bytes);
  constexpr int64_t kBlock = 64 << 10;
  std::deque<std::string> blocks;  // newest last
  int64_t start = size, newlines = 0;
  bool skip_final_newline = true;  // the final newline ends the last line, it does not start one
  int64_t begin = size;            // the answer is [begin, size)
  while (start > 0 && begin == size) {
    const int64_t n = std::min(kBlock, start);
    start -= n;
    std::string chunk(static_cast<size_t>(n), '\0');
    in.seekg(start);
    in.read(chunk.data(), n);
    for (int64_t k = n - 1; k >= 0; --k) {
      const int64_t at = start + k;
      if (chunk[static_cast<size_t>(k)] == '\n') {
        if (skip_final_newline && at == size - 1) continue;
        if (++newlines == tail) {
          begin = at + 1;
          break;
        }
      }
      if (size - at >= cap) {  // the newest `cap` bytes
        begin = at;
        break;
      }
    }
    skip_final_newline = false;
    blocks.push_front(std::move(chunk));
  }
  if (begin == size && start == 0) begin = 0;
  std::string out;
  out.reserve(static_cast<size_t>(size - begin + 1));
  int64_t pos = start;
  for (const auto& b : blocks) {
    const int64_t bend = pos + static_cast<int64_t>(b.size());
    if (bend > begin)
      out.append(b, static_cast<size_t>(std::max<int64_t>(0, begin - pos)), std::string::npos);
    pos = bend;
  }
  if (!out.empty() && out.back() != '\n') out += '\n';
  return out;
}

}  // namespace rx::coord
