#include "common/report/report_client.h"

#include "common/report/http_client.h"
#include "common/util/error.h"
#include "common/util/sha256.h"

namespace rx::report {

ReportClient::ReportClient(std::string coordinator_url, std::string job_id, std::string secret,
                           std::chrono::milliseconds timeout)
    : url_(std::move(coordinator_url)),
      job_id_(std::move(job_id)),
      secret_(std::move(secret)),
      timeout_(timeout) {
  parse_url(url_);  // fail fast on a malformed URL
}

void ReportClient::post(const nlohmann::json& body) {
  const std::string target = "/v1/jobs/" + job_id_ + "/reports";
  auto res = http_request(url_, "POST", target, body.dump(), {{"X-Job-Secret", secret_}}, timeout_);
  if (res.status < 200 || res.status >= 300)
    throw IoError(url_ + target, "HTTP " + std::to_string(res.status) + ": " + res.body.substr(0, 300));
}

nlohmann::json ReportClient::get_shard(int rank, int64_t epoch) {
  const std::string target =
      "/v1/jobs/" + job_id_ + "/shards/" + std::to_string(rank) + "?epoch=" + std::to_string(epoch);
  auto res = http_request(url_, "GET", target, "", {{"X-Job-Secret", secret_}}, timeout_);
  if (res.status != 200)
    throw IoError(url_ + target, "HTTP " + std::to_string(res.status) + ": " + res.body.substr(0, 300));
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(res.body);
  } catch (const nlohmann::json::exception& e) {
    throw IoError(url_ + target, std::string("bad JSON: ") + e.what());
  }
  if (rx::sha256_hex(j.at("indices").dump()) != j.value("sha256", ""))
    throw DataError(url_ + target, "shard checksum mismatch");
  return j;
}

std::string ReportClient::get_shard_data(int rank, const std::string& part, const std::string& split) {
  std::string target = "/v1/jobs/" + job_id_ + "/shards/" + std::to_string(rank) + "/data?split=" + split;
  if (!part.empty()) target += "&part=" + part;
  auto res = http_request(url_, "GET", target, "", {{"X-Job-Secret", secret_}}, timeout_);
  if (res.status != 200)
    throw IoError(url_ + target, "HTTP " + std::to_string(res.status) + ": " + res.body.substr(0, 300));
  const std::string want = res.header("X-Content-SHA256");
  if (want.empty() || rx::sha256_hex(res.body) != want)
    throw DataError(url_ + target, "shard bytes do not match X-Content-SHA256");
  return std::move(res.body);
}

}  // namespace rx::report
