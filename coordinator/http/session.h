#pragma once
// [Session] One HTTP/1.1 keep-alive connection, in the shape of Beast's async server example: read a
// request (with a deadline, so idle or slow clients are dropped), route it, write the response, loop.
// Limits live in a fresh request_parser per request: header_limit -> 431, body_limit -> 413. Neither
// covers a chunked body's chunk-size lines and trailers, so the read buffer itself is bounded too
// (buffer_overflow -> 413): one connection sending an endless chunk extension once grew the
// coordinator by 400 MB a second.
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <memory>
#include <optional>

#include "coordinator/http/router.h"

namespace rx::coord {

class Session : public std::enable_shared_from_this<Session> {
 public:
  // `client` was admitted by state.admit(); the session releases it when it ends.
  Session(boost::asio::ip::tcp::socket&& socket, ServiceState& state, std::chrono::seconds idle_timeout,
          boost::asio::ip::address client);
  ~Session();
  void run();

 private:
  void do_read();
  void on_read(boost::beast::error_code ec, std::size_t bytes);
  void send(Response&& res);
  void on_write(bool close, boost::beast::error_code ec, std::size_t bytes);
  void do_close();

  boost::beast::tcp_stream stream_;
  // Room for the largest request the parser accepts, plus its chunk framing.
  boost::beast::flat_buffer buffer_{kMaxHeaderBytes + kMaxBodyBytes + (64 << 10)};
  std::optional<boost::beast::http::request_parser<boost::beast::http::string_body>> parser_;
  std::shared_ptr<Response> res_;
  ServiceState& state_;
  std::chrono::seconds idle_timeout_;
  boost::asio::ip::address client_;
};

}  // namespace rx::coord
