#pragma once
// [Router] A pure function from request to response: no sockets, no I/O beyond what JobService does.
// Sessions call it for every parsed request; tests call it directly with hand-built requests.
#include <atomic>
#include <boost/beast/http.hpp>

#include "coordinator/http/http_metrics.h"
#include "coordinator/jobs/job_service.h"

namespace rx::coord {

using Request = boost::beast::http::request<boost::beast::http::string_body>;
using Response = boost::beast::http::response<boost::beast::http::string_body>;

constexpr size_t kMaxBodyBytes = 1 << 20;    // 413 above
constexpr size_t kMaxHeaderBytes = 8 << 10;  // 431 above (enforced by the session's parser)

struct ServiceState {
  explicit ServiceState(JobService& j) : jobs(j) {}
  JobService& jobs;
  HttpMetrics http;
  std::atomic<int> connections{0};  // open sessions (each holds one fd)
  int max_connections = 512;        // serve --max-connections: above it new connections are closed at once
};

Response route(const Request& req, ServiceState& state);

// {"error":{"code","message","field"}} with the given status (also used by the session for 413/431).
Response error_response(int status, const std::string& code, const std::string& message,
                        const std::string& field = "", unsigned version = 11, bool keep_alive = false);

}  // namespace rx::coord
