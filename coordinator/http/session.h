#pragma once
// [Session] One HTTP/1.1 keep-alive connection, in the shape of Beast's async server example: read a
// request (with deadlines, so idle or slow clients are dropped), route it, write the response, loop.
// [Header deadline] Two deadlines: waiting for a request's first byte, reading its body and writing the
// response each get the idle timeout; from the first byte, the request line and headers must be in
// within the header timeout (or the idle timeout, where that is shorter). So a client that trickles its
// headers (slowloris) holds a connection, and a slot of its per-client cap, for seconds, while a
// keep-alive client may still idle between requests and upload a large body over a slow link.
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

struct SessionTimeouts {
  std::chrono::seconds idle{30};    // --idle-timeout-s
  std::chrono::seconds header{10};  // --header-timeout-s
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  // `client` was admitted by state.admit(); the session releases it when it ends.
  Session(boost::asio::ip::tcp::socket&& socket, ServiceState& state, SessionTimeouts timeouts,
          boost::asio::ip::address client);
  ~Session();
  void run();

 private:
  void do_read();
  void on_first_bytes(boost::beast::error_code ec, std::size_t bytes);
  void read_header();
  void on_header(boost::beast::error_code ec, std::size_t bytes);
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
  SessionTimeouts timeouts_;
  boost::asio::ip::address client_;
};

}  // namespace rx::coord
