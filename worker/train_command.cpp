// `resnext_worker train`: one rank of a data-parallel job (mpirun/srun/alone).
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <thread>

#include "common/comm/factory.h"
#include "common/comm/mpi/mpi_communicator.h"
#include "common/config/job_spec.h"
#include "common/parallel/thread_budget.h"
#include "common/report/report_client.h"
#include "common/util/error.h"
#include "common/util/file_util.h"
#include "common/util/host_allocator.h"
#include "worker/commands.h"
#include "worker/hang_guard.h"
#include "worker/job_trace.h"
#include "worker/report_sender.h"
#include "worker/run_plots.h"
#include "worker/trainer.h"

namespace rx::worker {

using json = nlohmann::json;

namespace {
constexpr int kExitFailure = 1;
constexpr int kExitConfig = 2;
// [Exit 85] Preempted (SIGUSR1/SIGTERM): every rank finished the same step, the checkpoint is on disk,
// and `--resume` continues from it. launch/slurm/train.sbatch requeues the job on this code.
constexpr int kExitPreempted = 85;

// Sets LibTorch's thread pools explicitly, to the [Thread budget] (common/parallel/thread_budget.h):
// every rank shares its host and CPU mask over the boot communicator, so it can count the ranks whose
// masks overlap its own. A host-side collective before any other, bounded like the config agreement.
parallel::ThreadBudget setup_threads(int requested, comm::Communicator& boot) {
  char host[64] = {};
  gethostname(host, sizeof host - 1);
  const parallel::CpuMask mine = parallel::CpuMask::of_this_thread();
  constexpr int kWords = CPU_SETSIZE / 64;
  std::vector<int64_t> row(1 + kWords, 0);
  row[0] = static_cast<int64_t>(std::hash<std::string>{}(host));
  std::memcpy(row.data() + 1, mine.words.data(), std::min<size_t>(mine.words.size(), kWords) * 8);
  auto in = torch::tensor(row, torch::kInt64);
  auto all = torch::empty({boot.world_size() * (1 + kWords)}, torch::kInt64);
  comm::AllgatherOptions opts;
  opts.timeout = comm::Millis(120000);
  boot.allgather(in, all, opts)->wait(opts.timeout);
  std::vector<parallel::RankCpus> ranks(static_cast<size_t>(boot.world_size()));
  for (int r = 0; r < boot.world_size(); ++r) {
    const int64_t* v = all.data_ptr<int64_t>() + r * (1 + kWords);
    ranks[static_cast<size_t>(r)].host = v[0];
    ranks[static_cast<size_t>(r)].mask.words.resize(kWords);
    std::memcpy(ranks[static_cast<size_t>(r)].mask.words.data(), v + 1, kWords * 8);
  }
  auto budget = parallel::thread_budget(requested, std::getenv("OMP_NUM_THREADS"), ranks, boot.rank());
  if (!budget.warning.empty()) spdlog::warn("{}", budget.warning);
  torch::set_num_threads(budget.threads);
  try {
    torch::set_num_interop_threads(1);
  } catch (const c10::Error&) {
    // already set (only possible when embedded); keep LibTorch's value
  }
  return budget;
}

// training.device: "auto" takes cuda:<local rank mod GPUs> when this build and node have a GPU (ranks
// beyond the GPU count share them; comm/factory.h then stages MPI through host memory), else the CPU.
torch::Device pick_device(config::DeviceChoice wanted, int local_rank) {
  const bool cuda_build = comm::has_nccl_backend();
  const int gpus =
      cuda_build && torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0;
  if (wanted == config::DeviceChoice::kCpu || (wanted == config::DeviceChoice::kAuto && gpus == 0))
    return torch::Device(torch::kCPU);
  if (gpus == 0)
    throw ConfigError("training.device",
                      cuda_build ? "\"cuda\" but no CUDA device is visible on this node"
                                 : "\"cuda\" but this build has no CUDA (see launch/build_cuda.sh)");
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(local_rank % gpus));
}
}  // namespace

int train_command(const std::vector<std::string>& args) {
  Args cli(args, {"config", "out", "set", "job-id", "coordinator"}, {"help", "resume"});
  if (cli.has("help")) {
    std::cout << "usage: resnext_worker train --config FILE [--out DIR] [--set key=value ...]\n"
                 "                            [--resume] [--job-id ID --coordinator URL]   (secret in env "
                 "RX_JOB_SECRET)\n"
                 "exit codes: 0 done, 1 failure, 2 bad usage or config, 85 preempted (checkpoint written)\n";
    return 0;
  }
  if (!cli.has("config")) throw UsageError("train: --config FILE is required");
  std::vector<config::Override> overrides;
  for (const auto& kv : cli.all("set")) overrides.push_back(config::parse_override(kv));
  if (cli.has("out")) overrides.push_back({"output.dir", cli.get_or("out", "")});
  if (cli.has("resume")) overrides.push_back({"checkpoint.resume", "auto"});

  keep_freed_host_memory();  // [Host allocator], before the first tensor
  comm::MpiRuntime mpi;
  install_preemption_handlers();
  auto boot = comm::make_mpi_communicator();
  const int rank = boot->rank();
  auto logger = spdlog::stdout_color_mt("rank" + std::to_string(rank));
  logger->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [rank " + std::to_string(rank) + "] [%l] %v");
  spdlog::set_default_logger(logger);

  // [Config agreement] Every rank resolves the config itself, then all agree before any other
  // collective: one rank failing alone (a file missing on its node) must not leave the others
  // waiting in a broadcast.
  config::JobSpec spec;
  std::string failure;
  int failure_code = 0;
  try {
    spec = config::from_file(cli.get_or("config", ""), overrides);
    if (rank == 0) std::filesystem::create_directories(spec.output.dir);
  } catch (const ConfigError& e) {
    failure = std::string("config error: ") + e.what();
    failure_code = kExitConfig;
  } catch (const std::exception& e) {
    failure = e.what();
    failure_code = kExitConfig;
  }
  auto flag = torch::tensor({static_cast<int64_t>(failure_code)}, torch::kInt64);
  boot->allreduce(flag, {comm::ReduceOp::kMax, comm::Millis(120000)})->wait(comm::Millis(120000));
  if (flag.item<int64_t>() != 0) {
    if (!failure.empty()) spdlog::error("{}", failure);
    return static_cast<int>(flag.item<int64_t>());
  }

  try {
    const parallel::ThreadBudget threads = setup_threads(spec.training.threads, *boot);
    const torch::Device device = pick_device(spec.training.device, boot->local_rank());
    // Every rank may fetch its shard from the coordinator and may have to send a hang report; rank 0
    // sends progress and the result.
    std::unique_ptr<report::ReportClient> coordinator;
    std::unique_ptr<ReportSender> sender;
    if (cli.has("coordinator")) {
      const char* secret = std::getenv("RX_JOB_SECRET");
      coordinator =
          std::make_unique<report::ReportClient>(cli.get_or("coordinator", ""), cli.get_or("job-id", ""),
                                                 secret ? secret : "", std::chrono::seconds(30));
      ReportRetry retry;
      retry.total_s = spec.report.retry_s;
      sender = std::make_unique<ReportSender>(cli.get_or("coordinator", ""), cli.get_or("job-id", ""),
                                              secret ? secret : "", retry);
    }
    HangGuard guard = guard_against_hangs(comm::make_communicator(spec.distributed.backend, device.is_cuda()),
                                          spec, *boot, sender.get());
    comm::Communicator* comm = guard.comm.get();
    if (rank == 0)
      spdlog::info("world {} backend {} device {} threads/rank {} ({}) config {}", comm->world_size(),
                   comm->backend_name(), device.str(), torch::get_num_threads(), threads.source,
                   config::config_hash(spec).substr(0, 12));

    const std::string dir = spec.output.dir;
    TrainerHooks hooks;
    if (coordinator)
      hooks.fetch_shard = [&](const std::string& part, const std::string& split) {
        return coordinator->get_shard_data(rank, part, split);
      };
    if (rank == 0)
      hooks.on_progress = [&](const json& event) {
        // [Progress on disk] The job folder keeps the last progress whether or not the coordinator is up.
        try {
          write_file_atomic(dir + "/progress.json", event.dump() + "\n");
        } catch (const Error& e) {
          spdlog::warn("progress not written: {}", e.what());
        }
        if (sender) sender->progress(event);  // best-effort; training goes on
      };

    hooks.vote_comm = boot.get();  // [Stop vote]: on the host, beside the training communicator
    Trainer trainer(spec, *comm, device, hooks);
    std::unique_ptr<metrics::TraceRecorder> trace;  // output.trace ([Trace timeline])
    if (spec.output.trace) {
      trace = start_trace(*comm, dir, comm::Millis(120000));
      trainer.attach_trace(*trace);
    }
    json record = trainer.run();
    if (trace) write_rank_trace(*trace, dir, rank);
    if (rank == 0) {
      record["status"] = "succeeded";
      write_file_atomic(dir + "/result.json", record.dump(2) + "\n");
      write_run_plots(dir, record);  // plots.svg beside it
      spdlog::info("final test accuracy {:.4f} (best {:.4f}), {:.1f} images/s total; record: {}/result.json",
                   record["final_test_accuracy"].get<double>(), record["best_test_accuracy"].get<double>(),
                   record["total_images_per_sec"].get<double>(), dir);
    }
    comm->barrier(comm::Millis(120000));
    guard.watchdog.reset();  // no collectives from here on: retrying a report is not a hang
    // Every rank that reached the barrier has written its file; the wait covers a lagging shared file system.
    if (trace && rank == 0) merge_job_trace(dir, comm->world_size(), std::chrono::seconds(30));
    // [Result on disk first] result.json is written (atomically) before the report, so a report
    // that cannot be delivered within report.retry_s does not fail a finished run: exit 0, and the
    // coordinator can take the result from the job folder. Delivery comes after the last
    // collective, so peers are not held in a collective (they wait in MPI_Finalize meanwhile).
    if (rank == 0 && sender && !sender->deliver({{"type", "result"}, {"record", record}}))
      spdlog::warn("the result stays in {}/result.json for the coordinator to pick up", dir);
    return 0;
  } catch (const Preempted& e) {
    spdlog::warn("{} (exit {})", e.what(), kExitPreempted);
    return kExitPreempted;
  } catch (const std::exception& e) {
    // [Fail together] Any exception on any rank ends the whole job: a peer blocked in a collective
    // would otherwise only notice at its timeout.
    const bool config = dynamic_cast<const ConfigError*>(&e) != nullptr;
    spdlog::error("{}{}", config ? "config error: " : "", e.what());
    spdlog::default_logger()->flush();
    const int code = config ? kExitConfig : kExitFailure;
    if (boot->world_size() > 1) comm::MpiRuntime::abort(code);
    return code;
  }
}

}  // namespace rx::worker
