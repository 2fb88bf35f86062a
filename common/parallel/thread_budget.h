#pragma once
// [Thread budget] How many intra-op threads a rank runs. LibTorch does not divide a node's cores
// between the ranks on it (pytorch/pytorch#20156), and two OpenMP threads that share one core spin at
// every barrier waiting for each other: `mpirun -np 1` binds its rank to one core, and a rank with two
// threads there trained 3.6x slower than with one (bench/README.md, "Thread budget"). So the count is,
// first that applies:
//   1. training.threads, when > 0 (the config's word);
//   2. OMP_NUM_THREADS, when set (the launcher's or the user's word; the coordinator sets it to its
//      slot's share of the cores, coordinator/launch/local_launcher.h);
//   3. the CPUs this rank may run on (its affinity mask) divided by the ranks on the same host whose
//      masks overlap it: all local ranks when unbound, 1 when mpirun/srun bound each rank to its own
//      cores, the ranks of a socket when bound to sockets. "The same host" is the same hostname, as for
//      the run record's nodes[]; masks of more than CPU_SETSIZE (1024) CPUs are not supported.
#include <cstdint>
#include <string>
#include <vector>

namespace rx::parallel {

// A set of CPU ids (bit i of words[i / 64] = CPU i), as sched_getaffinity reports it.
struct CpuMask {
  std::vector<uint64_t> words;

  void add(int cpu);  // grows words as needed
  int count() const;
  bool overlaps(const CpuMask& other) const;
  static CpuMask of_this_thread();  // sched_getaffinity(0); all online CPUs if that fails
  static CpuMask first_n(int n);    // CPUs 0..n-1 (tests, and the fallback)
};

// One rank's place: which host (any key equal exactly for ranks on one host) and its mask.
struct RankCpus {
  int64_t host = 0;
  CpuMask mask;
};

struct ThreadBudget {
  int threads = 1;
  std::string source;   // "training.threads", "OMP_NUM_THREADS" or "affinity"
  std::string warning;  // set when OMP_NUM_THREADS was present but unusable (and ignored)
};

// requested: training.threads; omp_num_threads: the variable's value, or nullptr when unset;
// all: every rank's RankCpus, indexed by rank.
ThreadBudget thread_budget(int requested, const char* omp_num_threads, const std::vector<RankCpus>& all,
                           int rank);

}  // namespace rx::parallel
