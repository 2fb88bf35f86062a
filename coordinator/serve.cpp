// [serve] Wires the parts together: JobService (store + scheduler + launcher), the Beast listener on
// an io_context run by --threads threads, a tick thread (every 200 ms) that reaps/starts jobs, and a
// signal_set for SIGINT/SIGTERM. Shutdown stops accepting and leaves running jobs alone: they keep their own
// sessions and are re-attached by the next coordinator on the same --state-dir.
#include "coordinator/serve.h"

#include <signal.h>
#include <spdlog/fmt/ranges.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "common/parallel/thread_budget.h"
#include "common/util/args.h"
#include "common/util/error.h"
#include "coordinator/http/listener.h"
#include "coordinator/jobs/job_service.h"
#include "coordinator/launch/local_launcher.h"
#include "coordinator/launch/slurm_launcher.h"

namespace rx::coord {

namespace fs = std::filesystem;
namespace net = boost::asio;

namespace {

std::string first_existing(const std::vector<std::string>& candidates) {
  for (const auto& c : candidates)
    if (!c.empty() && fs::exists(c)) return fs::weakly_canonical(c).string();
  return "";
}

std::string env_or(const char* name, const std::string& def) {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : def;
}

}  // namespace

void run_guarded(net::io_context& ioc) {
  // [No crash] A handler that throws leaves io_context::run(); log it and go back in, so one bad
  // request (or a bug in a completion handler) costs that request, not every user's service.
  for (;;) {
    try {
      ioc.run();
      return;
    } catch (const std::exception& e) {
      spdlog::error("I/O thread: uncaught exception: {}", e.what());
    } catch (...) {
      spdlog::error("I/O thread: uncaught non-standard exception");
    }
  }
}

int serve_main(const std::vector<std::string>& argv, const std::string& exe_dir) {
  Args a(argv,
         {"listen",
          "state-dir",
          "slots",
          "launcher",
          "token-file",
          "worker",
          "configs-dir",
          "threads",
          "idle-timeout-s",
          "header-timeout-s",
          "cancel-grace-s",
          "mpirun",
          "log-level",
          "slurm-template",
          "sbatch-arg",
          "data-root",
          "weights-root",
          "max-connections",
          "max-connections-per-client",
          "max-queued-per-owner",
          "max-ranks",
          "max-reports-per-job",
          "max-report-bytes",
          "max-log-bytes",
          "max-config-string"},
         {"insecure"});
  if (!a.positionals().empty()) throw UsageError("serve: unexpected argument '" + a.positionals()[0] + "'");
  const auto state_dir = a.get("state-dir");
  if (!state_dir) throw UsageError("serve: --state-dir DIR is required");
  const std::string launcher = a.get_or("launcher", "local");
  if (launcher != "local" && launcher != "slurm")
    throw UsageError("--launcher must be local or slurm, got '" + launcher + "'");
  spdlog::set_level(spdlog::level::from_str(a.get_or("log-level", "info")));

  const std::string listen = a.get_or("listen", "127.0.0.1:8080");
  const auto colon = listen.rfind(':');
  if (colon == std::string::npos) throw UsageError("--listen must be HOST:PORT, got '" + listen + "'");
  const std::string host = listen.substr(0, colon);
  int port = 0;
  try {
    size_t used = 0;
    port = std::stoi(listen.substr(colon + 1), &used);
    if (used != listen.size() - colon - 1 || port < 0 || port > 65535) throw std::invalid_argument("port");
  } catch (const std::exception&) {
    throw UsageError("--listen must be HOST:PORT, got '" + listen + "'");
  }
  boost::system::error_code ec;
  const auto address = net::ip::make_address(host, ec);
  if (ec) throw UsageError("--listen: '" + host + "' is not an IP address");
  // [Exposure] Without tokens anyone who can connect may submit jobs that run as this user, so only
  // loopback is allowed unless the operator says --insecure in so many words.
  if (!address.is_loopback() && !a.get("token-file") && !a.has("insecure"))
    throw UsageError(
        "--listen " + listen +
        " is reachable from other hosts: pass --token-file FILE (or --insecure to run without auth)");

  std::string worker = a.get_or(
      "worker", first_existing({exe_dir + "/../worker/resnext_worker", exe_dir + "/resnext_worker"}));
  if (worker.empty()) {
    worker = exe_dir + "/resnext_worker";
    spdlog::warn("no resnext_worker next to the coordinator; jobs will fail until --worker is given");
  }
  if (worker.find('/') != std::string::npos) worker = fs::absolute(worker).string();
  std::string configs_dir = a.get_or(
      "configs-dir",
      first_existing(
          {env_or("RX_CONFIGS_DIR", ""), exe_dir + "/../../configs", exe_dir + "/../share/resnext/configs",
           env_or("RX_SOURCE_DIR", "").empty() ? "" : env_or("RX_SOURCE_DIR", "") + "/configs", "configs"}));

  ServiceOptions opts;
  opts.state_dir = fs::absolute(*state_dir).string();
  opts.slots =
      a.get_int("slots", static_cast<int>(std::max(1u, std::thread::hardware_concurrency())), 1, 1 << 20);
  opts.configs_dir = configs_dir;
  opts.cancel_grace_ms = int64_t{1000} * a.get_int("cancel-grace-s", 10, 0, 3600);
  // [Path policy] Relative roots, like relative config paths, are taken from the coordinator's working
  // directory (the workers inherit it). Defaults: Debian's dataset folder, the project's data/ and weights/.
  opts.paths.data_roots = a.all("data-root");
  if (opts.paths.data_roots.empty()) opts.paths.data_roots = {"/usr/share/datasets", "data"};
  opts.paths.weights_roots = a.all("weights-root");
  if (opts.paths.weights_roots.empty()) opts.paths.weights_roots = {"weights"};
  for (auto* roots : {&opts.paths.data_roots, &opts.paths.weights_roots})
    for (auto& r : *roots) r = PathPolicy::canonical_root(r);
  opts.paths.max_string_bytes = static_cast<size_t>(a.get_int("max-config-string", 4096, 64, 1 << 20));
  opts.limits.max_queued_per_owner = a.get_int("max-queued-per-owner", 100, 1, 1 << 20);
  opts.limits.max_ranks = a.get_int("max-ranks", 0, 0, 1 << 20);
  opts.limits.max_reports_per_job = a.get_int("max-reports-per-job", 20000, 1, 1 << 30);
  opts.limits.max_report_bytes = static_cast<size_t>(a.get_int("max-report-bytes", 256 << 10, 1024, 1 << 20));
  opts.limits.max_log_bytes = static_cast<size_t>(a.get_int("max-log-bytes", 1 << 20, 1024, 1 << 30));
  Tokens tokens = a.get("token-file") ? Tokens::load(*a.get("token-file")) : Tokens();
  const bool tokens_enabled = tokens.enabled();
  const int threads = a.get_int("threads", 2, 1, 256);
  SessionTimeouts timeouts;  // [Header deadline]
  timeouts.idle = std::chrono::seconds(a.get_int("idle-timeout-s", 30, 1, 3600));
  timeouts.header = std::chrono::seconds(a.get_int("header-timeout-s", 10, 1, 3600));

  ::signal(SIGPIPE, SIG_IGN);
  std::unique_ptr<Launcher> job_launcher;
  if (launcher == "slurm") {
    // [--launcher slurm] sbatch/scontrol/scancel from PATH (SLURM_CONF as usual); the batch script is
    // rendered from launch/slurm/train.sbatch; --sbatch-arg adds site flags (partition, GPUs, time).
    SlurmOptions so;
    so.worker = worker;
    so.sbatch_args = a.all("sbatch-arg");
    so.template_path = a.get_or(
        "slurm-template", first_existing({exe_dir + "/../../launch/slurm/train.sbatch",
                                          exe_dir + "/../share/resnext/launch/slurm/train.sbatch",
                                          env_or("RX_SOURCE_DIR", "").empty()
                                              ? ""
                                              : env_or("RX_SOURCE_DIR", "") + "/launch/slurm/train.sbatch"}));
    if (so.template_path.empty())
      throw UsageError("--launcher slurm: cannot find train.sbatch; pass --slurm-template");
    spdlog::info("slurm launcher: template {}", so.template_path);
    job_launcher = std::make_unique<SlurmLauncher>(std::move(so));
  } else {
    // [Slot threads] A slot is a 1/slots share of the CPUs this coordinator may use; each rank of a
    // job gets that many intra-op threads (OMP_NUM_THREADS, which the worker's [Thread budget] obeys).
    const int cpus = rx::parallel::CpuMask::of_this_thread().count();
    const int threads_per_rank = std::max(1, cpus / opts.slots);
    if (const char* own = std::getenv("OMP_NUM_THREADS"))
      spdlog::info("local launcher: jobs keep this environment's OMP_NUM_THREADS={}", own);
    else
      spdlog::info("local launcher: {} CPUs over {} slots, OMP_NUM_THREADS={} per rank", cpus, opts.slots,
                   threads_per_rank);
    job_launcher = std::make_unique<LocalLauncher>(worker, a.get_or("mpirun", "mpirun"), threads_per_rank);
  }
  JobService service(opts, std::move(job_launcher), std::move(tokens));
  ServiceState state(service);
  state.max_connections = a.get_int("max-connections", 512, 1, 1 << 20);
  state.max_connections_per_client = a.get_int("max-connections-per-client", 64, 1, 1 << 20);
  state.loopback_host_only = !tokens_enabled && address.is_loopback();  // [Cross-site]

  net::io_context ioc{threads};
  auto listener = std::make_shared<Listener>(
      ioc, net::ip::tcp::endpoint{address, static_cast<unsigned short>(port)}, state, timeouts);
  const std::string self_host = address.is_unspecified() ? "127.0.0.1" : host;
  const std::string url = "http://" + self_host + ":" + std::to_string(listener->port());
  service.set_self_url(url);
  service.recover();
  {  // tests and scripts read the bound port from here (written atomically)
    std::ofstream(opts.state_dir + "/port.tmp") << listener->port() << "\n";
    fs::rename(opts.state_dir + "/port.tmp", opts.state_dir + "/port");
  }
  spdlog::info("data roots: {}; weights roots: {}", fmt::join(opts.paths.data_roots, ", "),
               fmt::join(opts.paths.weights_roots, ", "));
  spdlog::info("listening on {} (slots {}, worker {}, configs {}, state {}, auth {})", url, opts.slots,
               worker, configs_dir.empty() ? "<none>" : configs_dir, opts.state_dir,
               service.tokens().enabled() ? "tokens" : "off");
  listener->run();

  // [Tick thread] Reaping, polling (scontrol/sacct for Slurm, each with its own timeout) and starting
  // jobs (sbatch) run on their own thread, so a slow slurmctld never holds an HTTP I/O thread.
  std::mutex tick_mu;
  std::condition_variable tick_cv;
  bool stopping = false;
  std::thread ticker([&] {
    std::unique_lock lock(tick_mu);
    while (!tick_cv.wait_for(lock, std::chrono::milliseconds(200), [&] { return stopping; })) {
      lock.unlock();
      try {
        service.tick();
      } catch (const std::exception& ex) {
        spdlog::error("tick: {}", ex.what());
      } catch (...) {
        spdlog::error("tick: non-standard exception");
      }
      lock.lock();
    }
  });

  net::signal_set signals(ioc, SIGINT, SIGTERM);
  signals.async_wait([&](boost::system::error_code, int sig) {
    spdlog::info("signal {}: shutting down (running jobs keep running)", sig);
    listener->stop();
    ioc.stop();
  });

  std::vector<std::thread> pool;
  for (int i = 1; i < threads; ++i) pool.emplace_back([&] { run_guarded(ioc); });
  run_guarded(ioc);
  for (auto& t : pool) t.join();
  {
    std::lock_guard lock(tick_mu);
    stopping = true;
  }
  tick_cv.notify_all();
  ticker.join();
  return 0;
}

}  // namespace rx::coord
