#pragma once
// [Sync HTTP client] A tiny blocking HTTP/1.1 client on Boost.Beast for the worker's reports and the
// coordinator's CLI. One connection per call (reports are rare; the CLI makes one call per command),
// and every step (resolve, connect, write, read) shares one deadline via tcp_stream::expires_after.
#include <chrono>
#include <string>
#include <utility>
#include <vector>

namespace rx::report {

struct Url {
  std::string host;
  std::string port;
  std::string prefix;  // path prefix without trailing '/', usually empty
};

// "http://host:port[/prefix]"; throws rx::ConfigError("url", ...) for anything else (no https).
Url parse_url(const std::string& url);

struct HttpResponse {
  int status = 0;
  std::string body;
  std::string content_type;
  std::vector<std::pair<std::string, std::string>> headers;  // all response headers, in order
  std::string header(const std::string& name) const;         // case-insensitive; "" when absent
};

// Throws rx::IoError naming base_url + target on connection failure or timeout. Any status is
// returned (callers decide what non-2xx means).
HttpResponse http_request(const std::string& base_url, const std::string& method, const std::string& target,
                          const std::string& body,
                          const std::vector<std::pair<std::string, std::string>>& headers,
                          std::chrono::milliseconds timeout);

}  // namespace rx::report
