#pragma once
// [Report delivery] How the worker's reports reach the coordinator when the coordinator may be down
// or restarting. Everything it sends is first on disk in the job folder (progress.json, result.json,
// the hang report), so a coordinator that comes back can also take it from there; the network path
// adds bounded retries on top:
//  - deliver(): the result and the hang report. Exponential backoff (0.5 s doubling to 30 s) until the
//    coordinator answers 2xx, answers a permanent rejection (4xx other than 408/429: retrying the same
//    body cannot help), or the budget (report.retry_s, default 300 s) is spent. Returns whether it
//    arrived; it never throws, because a report that cannot be delivered must not turn a finished
//    training run into a failure (the result is already safe in result.json).
//  - progress(): one short try per event, skipped while the backoff of an earlier failure runs, so a
//    down coordinator costs training at most one quick failed connect per backoff period.
#include <chrono>
#include <nlohmann/json.hpp>
#include <string>

namespace rx::worker {

struct ReportRetry {
  double total_s = 300;  // report.retry_s
  double first_backoff_s = 0.5;
  double max_backoff_s = 30;
  std::chrono::milliseconds request_timeout{10000};
};

class ReportSender {
 public:
  // Throws ConfigError("url", ...) for a malformed URL.
  ReportSender(std::string coordinator_url, std::string job_id, std::string secret, ReportRetry retry);

  // Returns true when the coordinator acknowledged the report within `budget_s` (< 0: the configured
  // total). Logs each failed attempt and the final outcome.
  bool deliver(const nlohmann::json& body, double budget_s = -1);
  void progress(const nlohmann::json& body);

  // One attempt: 0 delivered, 1 retryable failure, 2 permanent rejection; `why` says what happened.
  int try_once(const nlohmann::json& body, std::chrono::milliseconds timeout, std::string& why);

 private:
  std::string url_, job_id_, secret_;
  ReportRetry retry_;
  std::chrono::steady_clock::time_point progress_quiet_until_{};
  double progress_backoff_s_ = 0;
};

}  // namespace rx::worker
