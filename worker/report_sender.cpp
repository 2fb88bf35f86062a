#include "worker/report_sender.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <thread>

#include "common/report/http_client.h"
#include "common/util/error.h"

namespace rx::worker {

using Clock = std::chrono::steady_clock;

ReportSender::ReportSender(std::string coordinator_url, std::string job_id, std::string secret,
                           ReportRetry retry)
    : url_(std::move(coordinator_url)),
      job_id_(std::move(job_id)),
      secret_(std::move(secret)),
      retry_(retry) {
  report::parse_url(url_);  // fail fast on a malformed URL
}

int ReportSender::try_once(const nlohmann::json& body, std::chrono::milliseconds timeout, std::string& why) {
  const std::string target = "/v1/jobs/" + job_id_ + "/reports";
  try {
    auto res = report::http_request(url_, "POST", target, body.dump(), {{"X-Job-Secret", secret_}}, timeout);
    if (res.status >= 200 && res.status < 300) return 0;
    why = url_ + target + ": HTTP " + std::to_string(res.status) + ": " + res.body.substr(0, 300);
    const bool permanent = res.status >= 400 && res.status < 500 && res.status != 408 && res.status != 429;
    return permanent ? 2 : 1;
  } catch (const Error& e) {  // connection refused, timeout, reset: the coordinator may come back
    why = e.what();
    return 1;
  }
}

bool ReportSender::deliver(const nlohmann::json& body, double budget_s) {
  const std::string type = body.value("type", std::string("report"));
  const double budget = budget_s < 0 ? retry_.total_s : budget_s;
  const auto deadline =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(budget));
  double backoff = retry_.first_backoff_s;
  for (int attempt = 1;; ++attempt) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    std::string why;
    const int rc =
        try_once(body, std::clamp(left, std::chrono::milliseconds(500), retry_.request_timeout), why);
    if (rc == 0) {
      if (attempt > 1) spdlog::info("{} report delivered on attempt {}", type, attempt);
      return true;
    }
    if (rc == 2) {
      spdlog::error("{} report rejected by the coordinator (not retried): {}", type, why);
      return false;
    }
    const auto next =
        Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(backoff));
    if (next >= deadline) {
      spdlog::error("{} report not delivered after {} attempts in {:.0f} s: {}", type, attempt, budget, why);
      return false;
    }
    spdlog::warn("{} report attempt {} failed ({}); retrying in {:.1f} s", type, attempt, why, backoff);
    std::this_thread::sleep_until(next);  // [Backoff] a real pause between attempts, not synchronisation
    backoff = std::min(backoff * 2, retry_.max_backoff_s);
  }
}

void ReportSender::progress(const nlohmann::json& body) {
  if (Clock::now() < progress_quiet_until_) return;  // an earlier failure's backoff: the file has it
  std::string why;
  if (try_once(body, std::min(retry_.request_timeout, std::chrono::milliseconds(5000)), why) == 0) {
    progress_backoff_s_ = 0;
    return;
  }
  progress_backoff_s_ = progress_backoff_s_ == 0 ? retry_.first_backoff_s
                                                 : std::min(progress_backoff_s_ * 2, retry_.max_backoff_s);
  progress_quiet_until_ = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                             std::chrono::duration<double>(progress_backoff_s_));
  spdlog::warn("progress report not delivered ({}); next try in {:.1f} s at the earliest", why,
               progress_backoff_s_);
}

}  // namespace rx::worker
