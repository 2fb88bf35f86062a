#include "coordinator/http/http_metrics.h"

#include <sstream>

namespace rx::coord {

const char* route_name(RouteId r) {
  switch (r) {
    case RouteId::kHealthz:
      return "/healthz";
    case RouteId::kMetrics:
      return "/metrics";
    case RouteId::kJobsList:
      return "GET /v1/jobs";
    case RouteId::kJobsSubmit:
      return "POST /v1/jobs";
    case RouteId::kJobGet:
      return "GET /v1/jobs/{id}";
    case RouteId::kJobMetrics:
      return "GET /v1/jobs/{id}/metrics";
    case RouteId::kJobLogs:
      return "GET /v1/jobs/{id}/logs";
    case RouteId::kJobResult:
      return "GET /v1/jobs/{id}/result";
    case RouteId::kJobTrace:
      return "GET /v1/jobs/{id}/trace";
    case RouteId::kJobCancel:
      return "POST /v1/jobs/{id}/cancel";
    case RouteId::kJobReports:
      return "POST /v1/jobs/{id}/reports";
    case RouteId::kJobShard:
      return "GET /v1/jobs/{id}/shards/{rank}";
    case RouteId::kJobShardData:
      return "GET /v1/jobs/{id}/shards/{rank}/data";
    case RouteId::kUi:
      return "GET /ui/";
    case RouteId::kNotFound:
      return "not_found";
    case RouteId::kMethodNotAllowed:
      return "method_not_allowed";
    case RouteId::kTooLarge:
      return "too_large";
    case RouteId::kCount:
      break;
  }
  return "unknown";
}

void HttpMetrics::record(RouteId route, int status, double seconds) {
  const int r = static_cast<int>(route);
  int cls = status / 100 - 1;
  if (cls < 0 || cls >= kClasses) cls = kClasses - 1;
  count_[r][cls].fetch_add(1, std::memory_order_relaxed);
  total_[r].fetch_add(1, std::memory_order_relaxed);
  sum_ns_[r].fetch_add(static_cast<uint64_t>(seconds * 1e9), std::memory_order_relaxed);
  for (size_t b = 0; b < kBuckets.size(); ++b)
    if (seconds <= kBuckets[b]) {
      bucket_[r][b].fetch_add(1, std::memory_order_relaxed);
      break;  // non-cumulative here; summed when rendered
    }
}

std::string HttpMetrics::prometheus() const {
  std::ostringstream os;
  os << "# HELP rx_http_requests_total HTTP requests by route and status class.\n"
        "# TYPE rx_http_requests_total counter\n";
  for (int r = 0; r < kRoutes; ++r)
    for (int c = 0; c < kClasses; ++c) {
      uint64_t n = count_[r][c].load(std::memory_order_relaxed);
      if (n)
        os << "rx_http_requests_total{route=\"" << route_name(static_cast<RouteId>(r)) << "\",code=\""
           << (c + 1) << "xx\"} " << n << "\n";
    }
  os << "# HELP rx_http_request_duration_seconds Time spent routing a request (excludes socket I/O).\n"
        "# TYPE rx_http_request_duration_seconds histogram\n";
  for (int r = 0; r < kRoutes; ++r) {
    uint64_t total = total_[r].load(std::memory_order_relaxed);
    if (!total) continue;
    const std::string name = route_name(static_cast<RouteId>(r));
    uint64_t cum = 0;
    for (size_t b = 0; b < kBuckets.size(); ++b) {
      cum += bucket_[r][b].load(std::memory_order_relaxed);
      os << "rx_http_request_duration_seconds_bucket{route=\"" << name << "\",le=\"" << kBuckets[b] << "\"} "
         << cum << "\n";
    }
    os << "rx_http_request_duration_seconds_bucket{route=\"" << name << "\",le=\"+Inf\"} " << total << "\n";
    os << "rx_http_request_duration_seconds_sum{route=\"" << name << "\"} "
       << static_cast<double>(sum_ns_[r].load(std::memory_order_relaxed)) / 1e9 << "\n";
    os << "rx_http_request_duration_seconds_count{route=\"" << name << "\"} " << total << "\n";
  }
  return os.str();
}

}  // namespace rx::coord
