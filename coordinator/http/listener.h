#pragma once
// [Listener] Accepts connections and hands each to a Session on its own strand, as in Beast's async
// server example. Binding port 0 picks a free port; port() reports the one bound. Past
// ServiceState::max_connections a new connection is closed at once (its fd is not kept).
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <memory>

#include "coordinator/http/router.h"
#include "coordinator/http/session.h"

namespace rx::coord {

class Listener : public std::enable_shared_from_this<Listener> {
 public:
  // Throws rx::IoError naming the endpoint when it cannot bind.
  Listener(boost::asio::io_context& ioc, const boost::asio::ip::tcp::endpoint& endpoint, ServiceState& state,
           SessionTimeouts timeouts);
  void run();
  void stop();
  unsigned short port() const;

 private:
  void do_accept();
  void on_accept(boost::beast::error_code ec, boost::asio::ip::tcp::socket socket);

  boost::asio::io_context& ioc_;
  boost::asio::ip::tcp::acceptor acceptor_;
  ServiceState& state_;
  SessionTimeouts timeouts_;
  // [Accept backoff] A failed accept (EMFILE when every fd is taken) waits before the next try, doubling
  // up to 1 s and logging once per failure streak, instead of spinning and logging forever.
  boost::asio::steady_timer retry_;
  std::chrono::milliseconds backoff_{0};
};

}  // namespace rx::coord
