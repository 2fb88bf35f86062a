#include "coordinator/http/listener.h"

#include <spdlog/spdlog.h>

#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>

#include "common/util/error.h"
#include "coordinator/http/session.h"

namespace rx::coord {

using namespace std::chrono_literals;

namespace beast = boost::beast;
namespace net = boost::asio;
using tcp = net::ip::tcp;

Listener::Listener(net::io_context& ioc, const tcp::endpoint& endpoint, ServiceState& state,
                   SessionTimeouts timeouts)
    : ioc_(ioc),
      acceptor_(net::make_strand(ioc)),
      state_(state),
      timeouts_(timeouts),
      retry_(acceptor_.get_executor()) {
  beast::error_code ec;
  const std::string where = endpoint.address().to_string() + ":" + std::to_string(endpoint.port());
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec) acceptor_.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(net::socket_base::max_listen_connections, ec);
  if (ec) throw IoError(where, "cannot listen: " + ec.message());
}

unsigned short Listener::port() const { return acceptor_.local_endpoint().port(); }

void Listener::run() {
  net::dispatch(acceptor_.get_executor(),
                beast::bind_front_handler(&Listener::do_accept, shared_from_this()));
}

void Listener::stop() {
  net::post(acceptor_.get_executor(), [self = shared_from_this()] {
    beast::error_code ec;
    self->acceptor_.close(ec);
    self->retry_.cancel();
  });
}

void Listener::do_accept() {
  acceptor_.async_accept(net::make_strand(ioc_),
                         beast::bind_front_handler(&Listener::on_accept, shared_from_this()));
}

void Listener::on_accept(beast::error_code ec, tcp::socket socket) {
  if (ec == net::error::operation_aborted || !acceptor_.is_open()) return;  // stopped
  if (ec) {
    if (backoff_.count() == 0) spdlog::warn("accept: {}; retrying with backoff", ec.message());
    backoff_ =
        std::min<std::chrono::milliseconds>(std::max<std::chrono::milliseconds>(backoff_ * 2, 10ms), 1000ms);
    retry_.expires_after(backoff_);
    retry_.async_wait([self = shared_from_this()](beast::error_code e) {
      if (!e) self->do_accept();
    });
    return;
  }
  if (backoff_.count() != 0) spdlog::info("accept: recovered");
  backoff_ = 0ms;
  const auto client = socket.remote_endpoint(ec).address();
  if (ec || !state_.admit(client)) {
    socket.close(ec);  // gone already, or over a cap: refuse by closing, keep serving the others
  } else {
    socket.set_option(tcp::no_delay(true), ec);
    std::make_shared<Session>(std::move(socket), state_, timeouts_, client)->run();
  }
  do_accept();
}

}  // namespace rx::coord
