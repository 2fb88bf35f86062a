#include "coordinator/launch/proc_identity.h"

#include <unistd.h>

#include <fstream>
#include <iterator>
#include <sstream>

namespace rx::coord {

std::optional<ProcStat> proc_stat(int64_t pid) {
  if (pid <= 0) return std::nullopt;
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(f, line)) return std::nullopt;
  const auto rp = line.rfind(')');  // comm may hold spaces and ')'
  if (rp == std::string::npos) return std::nullopt;
  std::istringstream is(line.substr(rp + 1));
  ProcStat st;
  std::string skip;
  int64_t ppid = 0, pgrp = 0;
  if (!(is >> st.state >> ppid >> pgrp >> st.session)) return std::nullopt;
  for (int field = 7; field < 22; ++field) is >> skip;  // tty_nr .. itrealvalue
  if (!(is >> st.start_time)) return std::nullopt;
  return st;
}

int64_t start_time_to_unix_ms(uint64_t start_time) {
  std::ifstream f("/proc/stat");
  std::string key;
  int64_t btime = 0;
  while (f >> key) {
    if (key == "btime") {
      f >> btime;
      break;
    }
    f.ignore(1 << 20, '\n');
  }
  const long hz = sysconf(_SC_CLK_TCK);
  return btime * 1000 + static_cast<int64_t>(start_time) * 1000 / (hz > 0 ? hz : 100);
}

bool cmdline_has_arg(int64_t pid, const std::string& arg) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
  const std::string all((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  size_t i = 0;
  while (i < all.size()) {
    size_t j = all.find('\0', i);
    if (j == std::string::npos) j = all.size();
    if (all.compare(i, j - i, arg) == 0 && j - i == arg.size()) return true;
    i = j + 1;
  }
  return false;
}

bool same_process(int64_t pid, uint64_t start_time) {
  auto st = proc_stat(pid);
  if (!st || st->state == 'Z' || st->state == 'X') return false;
  return start_time == 0 || st->start_time == start_time;
}

}  // namespace rx::coord
