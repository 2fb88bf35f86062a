#pragma once
// [Router] A pure function from request to response: no sockets, no I/O beyond what JobService does.
// Sessions call it for every parsed request; tests call it directly with hand-built requests.
#include <atomic>
#include <boost/asio/ip/address.hpp>
#include <boost/beast/http.hpp>
#include <map>
#include <mutex>

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
  // [Per client] serve --max-connections-per-client: one address (an idle-socket flood) cannot take
  // every connection from the others. admit() counts a new session of `client` unless it would pass a
  // cap; every admitted session is released once.
  int max_connections_per_client = 64;
  bool admit(const boost::asio::ip::address& client);
  void release(const boost::asio::ip::address& client);
  // [Cross-site] serve sets it when there are no tokens on a loopback address: every request must then
  // name a loopback Host (127.0.0.0/8, ::1, localhost), which a DNS-rebound page cannot.
  bool loopback_host_only = false;

 private:
  std::mutex clients_mu_;
  std::map<boost::asio::ip::address, int> clients_;  // open sessions per client address
};

Response route(const Request& req, ServiceState& state);

// {"error":{"code","message","field"}} with the given status (also used by the session for 413/431).
Response error_response(int status, const std::string& code, const std::string& message,
                        const std::string& field = "", unsigned version = 11, bool keep_alive = false);

}  // namespace rx::coord
