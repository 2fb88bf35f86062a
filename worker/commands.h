#pragma once
#include <string>
#include <vector>

#include "common/util/args.h"

namespace rx::worker {
// Each returns the process exit code; rx::Error escapes to main, which maps it to a message + code.
int describe_command(const std::vector<std::string>& args);
int train_command(const std::vector<std::string>& args);
int devices_command(const std::vector<std::string>& args);
}  // namespace rx::worker
