#pragma once
// [Process identity] What /proc says about a pid, so the coordinator can tell its own launcher
// process from a stranger that was given the same pid later.
#include <cstdint>
#include <optional>
#include <string>

namespace rx::coord {

struct ProcStat {
  char state = 0;
  int64_t session = 0;
  uint64_t start_time = 0;  // field 22: clock ticks since boot
};

std::optional<ProcStat> proc_stat(int64_t pid);  // nullopt: no such process
// Unix ms at which a process with this start_time began (boot time + ticks).
int64_t start_time_to_unix_ms(uint64_t start_time);
// true when /proc/<pid>/cmdline has `arg` as one of its arguments.
bool cmdline_has_arg(int64_t pid, const std::string& arg);
// true when pid lives and, if `start_time` is known, started at exactly that tick.
bool same_process(int64_t pid, uint64_t start_time);

}  // namespace rx::coord
