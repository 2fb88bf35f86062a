#include "common/report/http_client.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "common/util/error.h"

namespace rx::report {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;

Url parse_url(const std::string& url) {
  const std::string scheme = "http://";
  if (url.rfind(scheme, 0) != 0) throw ConfigError("url", "expected http://HOST:PORT, got '" + url + "'");
  std::string rest = url.substr(scheme.size());
  Url out;
  auto slash = rest.find('/');
  std::string hostport = rest.substr(0, slash);
  if (slash != std::string::npos) {
    out.prefix = rest.substr(slash);
    while (!out.prefix.empty() && out.prefix.back() == '/') out.prefix.pop_back();
  }
  auto colon = hostport.rfind(':');
  if (colon == std::string::npos) {
    out.host = hostport;
    out.port = "80";
  } else {
    out.host = hostport.substr(0, colon);
    out.port = hostport.substr(colon + 1);
  }
  if (out.host.empty() || out.port.empty() || out.port.find_first_not_of("0123456789") != std::string::npos)
    throw ConfigError("url", "expected http://HOST:PORT, got '" + url + "'");
  return out;
}

std::string HttpResponse::header(const std::string& name) const {
  for (const auto& [k, v] : headers)
    if (beast::iequals(k, name)) return v;
  return "";
}

HttpResponse http_request(const std::string& base_url, const std::string& method, const std::string& target,
                          const std::string& body,
                          const std::vector<std::pair<std::string, std::string>>& headers,
                          std::chrono::milliseconds timeout) {
  const Url url = parse_url(base_url);
  const std::string where = base_url + target;
  try {
    net::io_context ioc;
    net::ip::tcp::resolver resolver(ioc);
    beast::tcp_stream stream(ioc);
    // One overall deadline: each async op below re-arms the remaining budget.
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    auto remaining = [&] {
      auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      return left.count() > 0 ? left : std::chrono::milliseconds(1);
    };
    beast::error_code ec;
    auto results = resolver.resolve(url.host, url.port, ec);
    if (ec) throw IoError(where, "resolve failed: " + ec.message());

    stream.expires_after(remaining());
    stream.async_connect(results, [&](beast::error_code e, const net::ip::tcp::endpoint&) { ec = e; });
    ioc.run();
    if (ec) throw IoError(where, "connect failed: " + ec.message());

    http::request<http::string_body> req{http::string_to_verb(method), url.prefix + target, 11};
    req.set(http::field::host, url.host);
    req.set(http::field::user_agent, "rx-report/1");
    for (const auto& [k, v] : headers) req.set(k, v);
    if (!body.empty() || method == "POST") {
      req.set(http::field::content_type, "application/json");
      req.body() = body;
      req.prepare_payload();
    }
    stream.expires_after(remaining());
    ioc.restart();
    http::async_write(stream, req, [&](beast::error_code e, std::size_t) { ec = e; });
    ioc.run();
    if (ec) throw IoError(where, "write failed: " + ec.message());

    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.body_limit(64ull << 20);
    stream.expires_after(remaining());
    ioc.restart();
    http::async_read(stream, buffer, parser, [&](beast::error_code e, std::size_t) { ec = e; });
    ioc.run();
    if (ec == beast::error::timeout)
      throw IoError(where, "timed out after " + std::to_string(timeout.count()) + " ms");
    if (ec) throw IoError(where, "read failed: " + ec.message());
    auto res = parser.release();
    stream.socket().shutdown(net::ip::tcp::socket::shutdown_both, ec);
    HttpResponse out;
    out.status = static_cast<int>(res.result_int());
    out.body = std::move(res.body());
    out.content_type = std::string(res[http::field::content_type]);
    for (const auto& f : res) out.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
    return out;
  } catch (const boost::system::system_error& e) {
    throw IoError(where, e.what());
  }
}

}  // namespace rx::report
