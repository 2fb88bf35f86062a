#include "coordinator/http/session.h"

#include <boost/asio/dispatch.hpp>

namespace rx::coord {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;

Session::Session(net::ip::tcp::socket&& socket, ServiceState& state, std::chrono::seconds idle_timeout,
                 net::ip::address client)
    : stream_(std::move(socket)), state_(state), idle_timeout_(idle_timeout), client_(std::move(client)) {}

Session::~Session() { state_.release(client_); }

void Session::run() {
  net::dispatch(stream_.get_executor(), beast::bind_front_handler(&Session::do_read, shared_from_this()));
}

void Session::do_read() {
  parser_.emplace();
  parser_->header_limit(kMaxHeaderBytes);
  parser_->body_limit(kMaxBodyBytes);
  stream_.expires_after(idle_timeout_);
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
  stream_.expires_after(idle_timeout_);
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
