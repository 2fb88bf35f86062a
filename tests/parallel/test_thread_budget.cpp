// [Thread budget]: the intra-op thread count a rank picks, for the placements launchers make
// (unbound, bound to cores, bound to sockets, srun's per-task CPU sets, a cgroup smaller than the host).
#include <gtest/gtest.h>
#include <sched.h>

#include <initializer_list>

#include "common/parallel/thread_budget.h"

using rx::parallel::CpuMask;
using rx::parallel::RankCpus;
using rx::parallel::thread_budget;

namespace {
CpuMask cpus(std::initializer_list<int> ids) {
  CpuMask m;
  for (int i : ids) m.add(i);
  return m;
}

CpuMask range(int first, int n) {
  CpuMask m;
  for (int i = first; i < first + n; ++i) m.add(i);
  return m;
}

// `ranks` ranks on host 1, rank r with mask_of(r).
template <typename F>
std::vector<RankCpus> placed(int ranks, F mask_of) {
  std::vector<RankCpus> all;
  for (int r = 0; r < ranks; ++r) all.push_back({1, mask_of(r)});
  return all;
}

int affinity_threads(const std::vector<RankCpus>& all, int rank) {
  auto b = thread_budget(0, nullptr, all, rank);
  EXPECT_EQ(b.source, "affinity");
  EXPECT_TRUE(b.warning.empty());
  return b.threads;
}
}  // namespace

TEST(ThreadBudget, ConfigWinsOverEverything) {
  auto all = placed(1, [](int) { return range(0, 16); });
  auto b = thread_budget(3, "8", all, 0);
  EXPECT_EQ(b.threads, 3);
  EXPECT_EQ(b.source, "training.threads");
}

TEST(ThreadBudget, OmpNumThreadsWinsOverTheMask) {
  auto all = placed(1, [](int) { return range(0, 16); });
  EXPECT_EQ(thread_budget(0, "4", all, 0).threads, 4);
  EXPECT_EQ(thread_budget(0, "4", all, 0).source, "OMP_NUM_THREADS");
  EXPECT_EQ(thread_budget(0, "6,2", all, 0).threads, 6);  // nested levels: the outer one
  EXPECT_EQ(thread_budget(0, " 5 ", all, 0).threads, 5);  // blanks, as OpenMP runtimes accept
  // More than the mask holds: the user's word, as OpenMP itself would take it.
  EXPECT_EQ(thread_budget(0, "32", all, 0).threads, 32);
}

TEST(ThreadBudget, UnusableOmpNumThreadsIsIgnoredWithAWarning) {
  auto all = placed(2, [](int) { return range(0, 16); });
  for (const char* bad : {"", "  ", "0", "-2", "four", "4x", "4 2", "99999", ",4"}) {
    auto b = thread_budget(0, bad, all, 1);
    EXPECT_EQ(b.threads, 8) << bad;
    EXPECT_EQ(b.source, "affinity") << bad;
    EXPECT_NE(b.warning.find("OMP_NUM_THREADS"), std::string::npos) << bad;
  }
}

TEST(ThreadBudget, UnboundRanksSplitTheHost) {
  for (int np : {1, 2, 3, 4, 16, 32}) {
    auto all = placed(np, [](int) { return range(0, 16); });
    for (int r = 0; r < np; ++r) EXPECT_EQ(affinity_threads(all, r), std::max(1, 16 / np)) << np;
  }
}

TEST(ThreadBudget, BoundToACoreMeansOneThread) {
  // mpirun's default for np <= 2 (--bind-to core), and np=1 on a 16-core host.
  EXPECT_EQ(affinity_threads(placed(1, [](int) { return cpus({0}); }), 0), 1);
  auto all = placed(4, [](int r) { return cpus({r}); });
  for (int r = 0; r < 4; ++r) EXPECT_EQ(affinity_threads(all, r), 1);
}

TEST(ThreadBudget, BoundToSocketsSplitsEachSocket) {
  // 2 sockets of 8 cores, 4 ranks mapped by socket: ranks 0, 2 on socket 0, ranks 1, 3 on socket 1.
  auto all = placed(4, [](int r) { return range(8 * (r % 2), 8); });
  for (int r = 0; r < 4; ++r) EXPECT_EQ(affinity_threads(all, r), 4);
  // 3 ranks on socket 0 and 1 on socket 1: the lone rank keeps its whole socket.
  auto uneven = placed(4, [](int r) { return r < 3 ? range(0, 8) : range(8, 8); });
  EXPECT_EQ(affinity_threads(uneven, 0), 2);
  EXPECT_EQ(affinity_threads(uneven, 3), 8);
}

TEST(ThreadBudget, SrunCpusPerTaskKeepsEachTasksCpus) {
  // srun --cpus-per-task=4 with task/affinity: disjoint sets of 4.
  auto all = placed(4, [](int r) { return range(4 * r, 4); });
  for (int r = 0; r < 4; ++r) EXPECT_EQ(affinity_threads(all, r), 4);
}

TEST(ThreadBudget, ACgroupSmallerThanTheHostIsShared) {
  // 4 unbound ranks in an 8-CPU allocation of a 64-CPU node: 2 each, not 64 / 4.
  auto all = placed(4, [](int) { return range(40, 8); });
  for (int r = 0; r < 4; ++r) EXPECT_EQ(affinity_threads(all, r), 2);
}

TEST(ThreadBudget, OtherHostsDoNotCount) {
  // 2 nodes, 2 unbound ranks each, the same CPU ids on both.
  std::vector<RankCpus> all = {{1, range(0, 16)}, {1, range(0, 16)}, {2, range(0, 16)}, {2, range(0, 16)}};
  for (int r = 0; r < 4; ++r) EXPECT_EQ(affinity_threads(all, r), 8);
}

TEST(ThreadBudget, MasksBeyondTheFirstWordCount) {
  auto all = placed(2, [](int r) { return r == 0 ? cpus({0, 1}) : cpus({70, 71, 72, 73}); });
  EXPECT_EQ(affinity_threads(all, 0), 2);
  EXPECT_EQ(affinity_threads(all, 1), 4);
  EXPECT_FALSE(cpus({3}).overlaps(cpus({67})));
  EXPECT_TRUE(cpus({67, 3}).overlaps(cpus({67})));
}

TEST(ThreadBudget, ThisThreadsMaskIsWhatTheKernelSays) {
  cpu_set_t set;
  CPU_ZERO(&set);
  ASSERT_EQ(sched_getaffinity(0, sizeof set, &set), 0);
  EXPECT_EQ(CpuMask::of_this_thread().count(), CPU_COUNT(&set));
  EXPECT_EQ(CpuMask::first_n(3).count(), 3);
}
