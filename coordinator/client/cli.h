#pragma once
#include <string>
#include <vector>

namespace rx::coord {
// `resnext_coordinator submit|list|status|logs|cancel ...`; returns the process exit code.
int client_main(const std::string& command, const std::vector<std::string>& args);
}  // namespace rx::coord
