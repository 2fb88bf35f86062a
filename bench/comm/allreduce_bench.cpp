// All-reduce benchmark in the style of nccl-tests (all_reduce_perf): for each size, time in-place
// sum all-reduces through rx::comm (including the Work/wait polling path the trainer uses) and
// report algbw = bytes / time and busbw = algbw * 2(n-1)/n, the per-link traffic of a ring, which
// is comparable across rank counts. #wrong is an in-place correctness check after the timing.
// For the mpi backend, ref(us) times a plain blocking MPI_Allreduce(MPI_IN_PLACE) on the same
// buffer: the gap to time(us) is the price of the non-blocking + polling path (libnbc vs. tuned).
//
//   mpirun --allow-run-as-root -np 2 --bind-to core build/bench/comm/allreduce_bench
//     [--backend auto|mpi|nccl] [--min-bytes 4] [--max-bytes 268435456] [--iters N] [--warmup N]
#include <mpi.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "common/comm/factory.h"
#include "common/comm/mpi/mpi_communicator.h"
#include "common/util/args.h"
#include "common/util/error.h"

namespace {

struct Options {
  std::string backend = "mpi";
  int64_t min_bytes = 4;
  int64_t max_bytes = int64_t{256} << 20;
  int iters = 0;  // 0: by size
  int warmup = 0;
};

Options parse(int argc, char** argv) {
  const rx::Args a({argv + 1, argv + argc}, {"backend", "min-bytes", "max-bytes", "iters", "warmup"}, {});
  if (!a.positionals().empty()) throw rx::UsageError("unexpected argument '" + a.positionals()[0] + "'");
  Options o;
  o.backend = a.get_or("backend", o.backend);
  if (o.backend != "auto" && o.backend != "mpi" && o.backend != "nccl")
    throw rx::UsageError("--backend must be auto, mpi or nccl, got '" + o.backend + "'");
  o.min_bytes = a.get_int64("min-bytes", o.min_bytes, 4, int64_t{1} << 40);
  o.max_bytes = a.get_int64("max-bytes", o.max_bytes, o.min_bytes, int64_t{1} << 40);
  o.iters = a.get_int("iters", o.iters, 0, 1000000);
  o.warmup = a.get_int("warmup", o.warmup, 0, 1000000);
  return o;
}

// Fewer iterations for big sizes: ~1 GiB of data per size, between 5 and 200 iterations.
int iterations_for(int64_t bytes) {
  return static_cast<int>(std::clamp<int64_t>((int64_t{1} << 30) / bytes, 5, 200));
}

double max_over_ranks(double v) {
  double out = 0;
  MPI_Allreduce(&v, &out, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return out;
}

int64_t sum_over_ranks(int64_t v) {
  int64_t out = 0;
  MPI_Allreduce(&v, &out, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
  return out;
}

// Blocking MPI_Allreduce on MPI_COMM_WORLD: the reference the rx::comm path is compared with.
double blocking_mpi_seconds(torch::Tensor& t, int iters, int warmup) {
  const int count = static_cast<int>(t.numel());
  for (int i = 0; i < warmup; ++i)
    MPI_Allreduce(MPI_IN_PLACE, t.data_ptr(), count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
  MPI_Barrier(MPI_COMM_WORLD);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i)
    MPI_Allreduce(MPI_IN_PLACE, t.data_ptr(), count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return max_over_ranks(secs) / iters;
}

void sync_device(bool cuda) {
  if (cuda) torch::zeros({1}, torch::TensorOptions().device(torch::kCUDA)).cpu();  // drains the stream
}

}  // namespace

int main(int argc, char** argv) {
  rx::comm::MpiRuntime mpi(&argc, &argv);
  try {
    const Options args = parse(argc, argv);
    const bool cuda = args.backend == "nccl" || (args.backend == "auto" && torch::cuda::is_available());
    auto comm = rx::comm::make_communicator(args.backend, cuda);
    const int w = comm->world_size(), r = comm->rank();
    auto opts = torch::TensorOptions().dtype(torch::kFloat);
    if (cuda) opts = opts.device(torch::kCUDA, comm->local_rank());
    const rx::comm::Millis timeout{120000};

    if (r == 0) {
      std::printf("# rx::comm all-reduce, backend %s, %d ranks, float32 sum, in place\n",
                  comm->backend_name().c_str(), w);
      std::printf("#%11s %12s %6s %10s %9s %9s %8s %10s\n", "size(B)", "count", "iters", "time(us)", "algbw",
                  "busbw", "#wrong", "ref(us)");
      std::printf("#%11s %12s %6s %10s %9s %9s %8s %10s\n", "", "(elements)", "", "", "(GB/s)", "(GB/s)", "",
                  "blocking");
    }
    const double bus_factor = w > 1 ? 2.0 * (w - 1) / w : 0.0;
    int64_t total_wrong = 0;
    for (int64_t bytes = args.min_bytes; bytes <= args.max_bytes; bytes *= 2) {
      const int64_t count = bytes / 4;
      const int iters = args.iters > 0 ? args.iters : iterations_for(bytes);
      const int warmup = args.warmup > 0 ? args.warmup : std::max(1, iters / 10);
      torch::Tensor t = torch::zeros({count}, opts);  // zeros stay zeros: no overflow while timing
      for (int i = 0; i < warmup; ++i) comm->allreduce(t)->wait(timeout);
      sync_device(cuda);
      comm->barrier(timeout);
      const auto start = std::chrono::steady_clock::now();
      for (int i = 0; i < iters; ++i) comm->allreduce(t)->wait(timeout);
      sync_device(cuda);
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const double avg_s = max_over_ranks(secs) / iters;  // the slowest rank defines the collective

      // Correctness: rank q contributes (q + 1) + (i % 1024); the sum is w(w+1)/2 + w * (i % 1024).
      torch::Tensor pattern = torch::arange(count, opts).remainder(1024);
      t.zero_();
      const double ref_s = cuda ? 0.0 : blocking_mpi_seconds(t, iters, warmup);
      t.copy_(pattern + (r + 1));
      comm->allreduce(t)->wait(timeout);
      const int64_t wrong = sum_over_ranks(t.ne(pattern * w + w * (w + 1) / 2.0).sum().item<int64_t>());
      total_wrong += wrong;

      if (r == 0) {
        const double algbw = static_cast<double>(bytes) / avg_s / 1e9;
        char ref[32] = "-";
        if (!cuda) std::snprintf(ref, sizeof(ref), "%.1f", ref_s * 1e6);
        std::printf("%12lld %12lld %6d %10.1f %9.3f %9.3f %8lld %10s\n", static_cast<long long>(bytes),
                    static_cast<long long>(count), iters, avg_s * 1e6, algbw, algbw * bus_factor,
                    static_cast<long long>(wrong), ref);
        std::fflush(stdout);
      }
    }
    if (r == 0)
      std::printf("# out of bounds values : %lld %s\n", static_cast<long long>(total_wrong),
                  total_wrong == 0 ? "OK" : "FAILED");
    return total_wrong == 0 ? 0 : 1;
  } catch (const rx::UsageError& e) {
    std::fprintf(stderr, "allreduce_bench: %s\n", e.what());
    return 2;
  } catch (const rx::ConfigError& e) {
    std::fprintf(stderr, "allreduce_bench: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "allreduce_bench: %s\n", e.what());
    rx::comm::MpiRuntime::abort(1);
  }
}
