#pragma once
// [ReportClient] What a worker's rank 0 uses to talk to the coordinator: POST progress/result reports
// and GET its shard plan. Authenticates with the per-job secret in the X-Job-Secret header (not
// Authorization: Bearer, which is reserved for user tokens). Torch-free; part of rx_core.
#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace rx::report {

class ReportClient {
 public:
  ReportClient(std::string coordinator_url, std::string job_id, std::string secret,
               std::chrono::milliseconds timeout);

  // POST /v1/jobs/{id}/reports. Throws rx::IoError naming the URL on failure, timeout or non-2xx.
  void post(const nlohmann::json& body);

  // GET /v1/jobs/{id}/shards/{rank}?epoch=E -> {rank, world_size, epoch, mode, indices, sha256}.
  // Throws rx::IoError as post() does, and rx::DataError when the indices' sha256 does not match.
  nlohmann::json get_shard(int rank, int64_t epoch);

  // data.source "coordinator": GET /v1/jobs/{id}/shards/{rank}/data[?part=images|labels] -> the rank's
  // static block (rx::data::static_block) in the dataset's own format (IDX file for part=images or
  // labels; CIFAR binary records otherwise). Throws IoError as post() does, DataError when the bytes do
  // not match the X-Content-SHA256 header.
  // split "test" gets the rank's block of the test split instead (X-Dataset-Size then counts test samples).
  std::string get_shard_data(int rank, const std::string& part = "", const std::string& split = "train");

 private:
  std::string url_;
  std::string job_id_;
  std::string secret_;
  std::chrono::milliseconds timeout_;
};

}  // namespace rx::report
