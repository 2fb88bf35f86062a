#include "common/parallel/thread_budget.h"

#include <sched.h>

#include <algorithm>
#include <charconv>
#include <thread>

namespace rx::parallel {

void CpuMask::add(int cpu) {
  const auto word = static_cast<size_t>(cpu) / 64;
  if (words.size() <= word) words.resize(word + 1, 0);
  words[word] |= uint64_t{1} << (cpu % 64);
}

int CpuMask::count() const {
  int n = 0;
  for (uint64_t w : words) n += __builtin_popcountll(w);
  return n;
}

bool CpuMask::overlaps(const CpuMask& other) const {
  const size_t n = std::min(words.size(), other.words.size());
  for (size_t i = 0; i < n; ++i)
    if (words[i] & other.words[i]) return true;
  return false;
}

CpuMask CpuMask::first_n(int n) {
  CpuMask m;
  for (int i = 0; i < n; ++i) m.add(i);
  return m;
}

CpuMask CpuMask::of_this_thread() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0)
    return first_n(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  CpuMask m;
  m.words.assign(CPU_SETSIZE / 64, 0);
  for (int i = 0; i < CPU_SETSIZE; ++i)
    if (CPU_ISSET(i, &set)) m.add(i);
  return m;
}

namespace {
// OMP_NUM_THREADS may be a list ("8,2" for nested levels): the first entry is the outer level.
// Returns 0 when it is not a positive integer.
int parse_omp_threads(const std::string& value) {
  std::string first = value.substr(0, value.find(','));
  const auto from = first.find_first_not_of(" \t");  // OpenMP runtimes allow surrounding blanks
  first = from == std::string::npos ? "" : first.substr(from, first.find_last_not_of(" \t") - from + 1);
  int n = 0;
  const auto [end, ec] = std::from_chars(first.data(), first.data() + first.size(), n);
  if (ec != std::errc() || end != first.data() + first.size() || n < 1 || n > 4096) return 0;
  return n;
}
}  // namespace

ThreadBudget thread_budget(int requested, const char* omp_num_threads, const std::vector<RankCpus>& all,
                           int rank) {
  if (requested > 0) return {requested, "training.threads", ""};
  std::string warning;
  if (omp_num_threads) {
    if (int n = parse_omp_threads(omp_num_threads); n > 0) return {n, "OMP_NUM_THREADS", ""};
    warning = std::string("OMP_NUM_THREADS=\"") + omp_num_threads +
              "\" is not a positive integer; ignored (threads from the affinity mask)";
  }
  const RankCpus& me = all.at(static_cast<size_t>(rank));
  int sharing = 0;  // this rank included
  for (const RankCpus& other : all)
    if (other.host == me.host && other.mask.overlaps(me.mask)) ++sharing;
  return {std::max(1, me.mask.count() / std::max(1, sharing)), "affinity", warning};
}

}  // namespace rx::parallel
