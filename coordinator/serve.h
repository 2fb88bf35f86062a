#pragma once
#include <boost/asio/io_context.hpp>
#include <string>
#include <vector>

namespace rx::coord {
// Runs ioc until it stops; an exception escaping a handler is logged and the loop resumes.
void run_guarded(boost::asio::io_context& ioc);
// `resnext_coordinator serve ...`; returns the process exit code.
int serve_main(const std::vector<std::string>& args, const std::string& exe_dir);
}  // namespace rx::coord
