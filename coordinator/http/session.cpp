#include "coordinator/http/session.h"

#include <algorithm>
#include <boost/asio/dispatch.hpp>

namespace rx::coord {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;

Session::Session(net::ip::tcp::socket&& socket, ServiceState& state, SessionTimeouts timeouts,
                 net::ip::address client)
    : stream_(std::move(socket)), state_(state), timeouts_(timeouts), client_(std::move(client)) {}

Session::~Session() { state_.release(client_); }

void Session::run() {
  net::dispatch(stream_.get_executor(), beast::bind_front_handler(&Session::do_read, shared_from_this()));
}

void Session::do_read() {
  parser_.emplace();
  parser_->header_limit(kMaxHeaderBytes);
  parser_->body_limit(kMaxBodyBytes);
  if (buffer_.size() > 0) return read_header();  // a pipelined request is already here
  // [Header deadline] Wait for the first byte under the idle timeout.
  stream_.expires_after(timeouts_.idle);
  stream_.async_read_some(buffer_.prepare(std::min<std::size_t>(4096, buffer_.max_size() - buffer_.size())),
                          beast::bind_front_handler(&Session::on_first_bytes, shared_from_this()));
}

void Session::on_first_bytes(beast::error_code ec, std::size_t bytes) {
  if (ec) return;  // closed between requests (EOF), or idle past the timeout: tcp_stream closed it
  buffer_.commit(bytes);
  read_header();
}

void Session::read_header() {
  stream_.expires_after(std::min(timeouts_.header, timeouts_.idle));  // never longer than the idle timeout
  http::async_read_header(stream_, buffer_, *parser_,
                          beast::bind_front_handler(&Session::on_header, shared_from_this()));
}

void Session::on_header(beast::error_code ec, std::size_t bytes) {
  if (ec) return on_read(ec, bytes);  // limits, bad requests and timeouts are answered there
  stream_.expires_after(timeouts_.idle);
  http::async_read(stream_, buffer_, *parser_,
                   beast::bind_front_handler(&Session::on_read, shared_from_this()));
}

void Session::on_read(beast::error_code ec, std::size_t) {
  if (ec == http::error::end_of_stream) return do_close();
  if (ec == http::error::body_limit || ec == http::error::buffer_overflow) {
    state_.http.record(RouteId::kTooLarge, 413, 0);
    return send(error_response(413, "too_large", "body exceeds " + std::to_string(kMaxBodyBytes) + " bytes"));
  }
  if (ec == http::error::header_limit) {
    state_.http.record(RouteId::kTooLarge, 431, 0);
    return send(error_response(431, "headers_too_large",
                               "request headers exceed " + std::to_string(kMaxHeaderBytes) + " bytes"));
  }
  if (ec == beast::error::timeout) return;  // idle/slow client: tcp_stream already closed the socket
  if (ec) {
    if (ec.category() == beast::error_code(http::error::bad_target).category())
      return send(error_response(400, "bad_request", ec.message()));
    return;
  }
  Response res;
  try {
    res = route(parser_->get(), state_);
  } catch (const std::exception& e) {  // route() catches everything itself; this is the last line
    res = error_response(500, "internal", e.what());
  } catch (...) {
    res = error_response(500, "internal", "internal error");
  }
  send(std::move(res));
}

void Session::send(Response&& res) {
  auto sp = std::make_shared<Response>(std::move(res));
  res_ = sp;
  stream_.expires_after(timeouts_.idle);
  http::async_write(stream_, *sp,
                    beast::bind_front_handler(&Session::on_write, shared_from_this(), sp->need_eof()));
}

void Session::on_write(bool close, beast::error_code ec, std::size_t) {
  if (ec) return;
  if (close) return do_close();
  res_.reset();
  do_read();
}

void Session::do_close() {
  beast::error_code ec;
  stream_.socket().shutdown(net::ip::tcp::socket::shutdown_send, ec);
}

}  // namespace rx::coord
