#pragma once
// [Command help] Per-command usage of resnext_coordinator, printed for `<command> --help` (exit 0).
#include <string>
#include <vector>

namespace rx::coord {

// The usage text of `command`, or "" if there is no such command.
std::string command_usage(const std::string& command);
// True if argv asks for help (`--help` or `-h` anywhere).
bool wants_help(const std::vector<std::string>& argv);

}  // namespace rx::coord
