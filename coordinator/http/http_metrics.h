#pragma once
// [HttpMetrics] Request counts and latency histograms per route template, in fixed arrays of relaxed
// atomics: recording is a few uncontended increments, so it costs the hot GET path nothing visible.
#include <array>
#include <atomic>
#include <cstdint>
#include <string>

namespace rx::coord {

enum class RouteId : int {
  kHealthz,
  kMetrics,
  kJobsList,
  kJobsSubmit,
  kJobGet,
  kJobMetrics,
  kJobLogs,
  kJobResult,
  kJobTrace,
  kJobCancel,
  kJobReports,
  kJobShard,
  kJobShardData,
  kUi,
  kNotFound,
  kMethodNotAllowed,
  kTooLarge,
  kCount
};
const char* route_name(RouteId r);

class HttpMetrics {
 public:
  static constexpr std::array<double, 9> kBuckets = {0.0005, 0.001, 0.0025, 0.005, 0.01,
                                                     0.025,  0.1,   0.5,    2.5};
  void record(RouteId route, int status, double seconds);
  std::string prometheus() const;

 private:
  static constexpr int kRoutes = static_cast<int>(RouteId::kCount);
  static constexpr int kClasses = 5;  // 1xx..5xx
  std::array<std::array<std::atomic<uint64_t>, kClasses>, kRoutes> count_{};
  std::array<std::array<std::atomic<uint64_t>, kBuckets.size()>, kRoutes> bucket_{};
  std::array<std::atomic<uint64_t>, kRoutes> sum_ns_{};
  std::array<std::atomic<uint64_t>, kRoutes> total_{};
};

}  // namespace rx::coord
