#pragma once
#include <string>
#include <vector>

namespace rx::coord {
// `resnext_coordinator serve ...`; returns the process exit code.
int serve_main(const std::vector<std::string>& args, const std::string& exe_dir);
}  // namespace rx::coord
