#include "coordinator/launch/local_launcher.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "common/util/error.h"
#include "coordinator/launch/proc_identity.h"

extern char** environ;

namespace rx::coord {

LocalLauncher::LocalLauncher(std::string worker, std::string mpirun, int threads_per_rank)
    : worker_(std::move(worker)), mpirun_(std::move(mpirun)), threads_per_rank_(threads_per_rank) {}

std::vector<int> LocalLauncher::session_members(int sid) {
  std::vector<int> out;
  if (sid <= 1) return out;
  DIR* d = opendir("/proc");
  if (!d) return out;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    std::ifstream f(std::string("/proc/") + e->d_name + "/stat");
    std::string line;
    if (!std::getline(f, line)) continue;
    auto rp = line.rfind(')');
    if (rp == std::string::npos) continue;
    std::istringstream is(line.substr(rp + 1));
    char state = 0;
    long ppid = 0, pgrp = 0, session = 0;
    if (!(is >> state >> ppid >> pgrp >> session)) continue;
    if (state == 'Z' || state == 'X') continue;
    if (session == sid) out.push_back(std::atoi(e->d_name));
  }
  closedir(d);
  return out;
}

LaunchHandle LocalLauncher::start(const LaunchSpec& spec) {
  RX_CHECK(!spec.secret.empty(), "job secret must be set");
  std::vector<std::string> args = {mpirun_,
                                   "--allow-run-as-root",
                                   "--oversubscribe",
                                   "--bind-to",
                                   "none",
                                   "-np",
                                   std::to_string(spec.world_size),
                                   "-x",
                                   "RX_JOB_SECRET",
                                   worker_,
                                   "train",
                                   "--config",
                                   spec.job_dir + "/config.json",
                                   "--out",
                                   spec.job_dir + "/run",
                                   "--job-id",
                                   spec.job_id,
                                   "--coordinator",
                                   spec.coordinator_url};
  if (spec.resume) args.push_back("--resume");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  // The environment is built before fork: only async-signal-safe calls are allowed in the child.
  std::vector<std::string> env_strings;
  bool has_omp_threads = false;
  for (char** e = environ; *e; ++e) {
    if (std::strncmp(*e, "RX_JOB_SECRET=", 14) != 0) env_strings.emplace_back(*e);
    if (std::strncmp(*e, "OMP_NUM_THREADS=", 16) == 0) has_omp_threads = true;
  }
  env_strings.push_back("RX_JOB_SECRET=" + spec.secret);
  if (threads_per_rank_ > 0 && !has_omp_threads)  // [Slot threads]
    env_strings.push_back("OMP_NUM_THREADS=" + std::to_string(threads_per_rank_));
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);

  // [Launch record] The child writes its pid here before exec, so a coordinator that dies between
  // fork and committing "running" can still find (and adopt) the job instead of launching it again.
  const std::string pid_path = spec.job_dir + "/launch.pid";
  const std::string log_path = spec.job_dir + "/worker.log";
  int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) throw IoError(log_path, std::strerror(errno));
  int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  int pipefd[2];
  if (pipe2(pipefd, O_CLOEXEC) != 0) {
    ::close(log_fd);
    if (null_fd >= 0) ::close(null_fd);
    throw IoError("pipe", std::strerror(errno));
  }
  pid_t pid = fork();
  if (pid < 0) {
    int err = errno;
    ::close(log_fd);
    ::close(pipefd[0]);
    ::close(pipefd[1]);
    if (null_fd >= 0) ::close(null_fd);
    throw IoError(mpirun_, std::string("fork failed: ") + std::strerror(err));
  }
  if (pid == 0) {
    // Child: async-signal-safe calls only.
    setsid();
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    signal(SIGPIPE, SIG_DFL);
    {
      char digits[24];
      int n = 0;
      char rev[24];
      for (long v = static_cast<long>(getpid()); v > 0 && n < 20; v /= 10)
        rev[n++] = static_cast<char>('0' + v % 10);
      for (int k = 0; k < n; ++k) digits[k] = rev[n - 1 - k];
      digits[n++] = '\n';
      int pf = ::open(pid_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (pf >= 0) {
        ssize_t w = write(pf, digits, static_cast<size_t>(n));
        (void)w;
        ::close(pf);
      }
    }
    if (null_fd >= 0) dup2(null_fd, 0);
    dup2(log_fd, 1);
    dup2(log_fd, 2);
    // Everything else the coordinator holds (listening socket, SQLite, client sockets) stays behind.
    // (pipefd[1] is O_CLOEXEC already: it closes on a successful exec and stays open to report a failure.)
    if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) != 0)
      for (int fd = 3; fd < 65536; ++fd) fcntl(fd, F_SETFD, FD_CLOEXEC);
    execvpe(argv[0], argv.data(), envp.data());
    int err = errno;
    ssize_t w = write(pipefd[1], &err, sizeof err);
    (void)w;
    _exit(127);
  }
  ::close(pipefd[1]);
  ::close(log_fd);
  if (null_fd >= 0) ::close(null_fd);
  int child_err = 0;
  ssize_t n;
  do {
    n = ::read(pipefd[0], &child_err, sizeof child_err);
  } while (n < 0 && errno == EINTR);
  ::close(pipefd[0]);
  if (n > 0) {
    waitpid(pid, nullptr, 0);
    throw IoError(mpirun_, std::string("cannot execute: ") + std::strerror(child_err));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    children_[pid] = std::nullopt;
  }
  auto st = proc_stat(pid);  // our unreaped child: the pid cannot have been recycled yet
  return LocalProcess{pid, st ? st->start_time : 0};
}

// The job's session leader is a stranger when its pid lives with another start time. A dead leader
// is fine: the session id stays taken while any member lives, so members found by it are ours.
static bool leader_recycled(const LocalProcess& p) {
  if (p.start_time == 0) return false;
  auto st = proc_stat(p.pid);
  return st && st->start_time != p.start_time;
}

// The job's process group (== its session and its leader's pid), or nullptr when the handle names
// none this launcher could signal: never kill(-1) / kill(0).
static const LocalProcess* group_of(const LaunchHandle& h) {
  const LocalProcess* p = h.local();
  return p && p->pid > 1 ? p : nullptr;
}

std::optional<LaunchHandle> LocalLauncher::find_launched(const LaunchSpec& spec, int64_t since_ms) {
  std::ifstream f(spec.job_dir + "/launch.pid");
  int64_t pid = 0;
  if (!(f >> pid) || pid <= 1) return std::nullopt;
  auto st = proc_stat(pid);
  if (!st || st->state == 'Z' || st->session != pid) return std::nullopt;
  // Started after the launch was recorded (1 s for the tick/btime granularity) and carries the job id.
  if (start_time_to_unix_ms(st->start_time) + 1000 < since_ms) return std::nullopt;
  if (!cmdline_has_arg(pid, spec.job_id)) return std::nullopt;
  return LocalProcess{pid, st->start_time};
}

std::optional<ExitInfo> LocalLauncher::poll(const LaunchHandle& h) {
  const LocalProcess* g = group_of(h);
  if (!g) return ExitInfo::failed("no process recorded");
  const int sid = static_cast<int>(g->pid);
  std::unique_lock<std::mutex> lock(mu_);
  auto it = children_.find(g->pid);
  if (it == children_.end()) {
    lock.unlock();
    // Re-attached after a restart: not our child, so the exit status is not ours to read.
    if (leader_recycled(*g))
      return ExitInfo::unknown("exit status unknown: the job's pid now belongs to another process");
    if (!session_members(sid).empty()) return std::nullopt;
    return ExitInfo::unknown("exit status unknown: the job ended while the coordinator was down");
  }
  if (!it->second) {
    siginfo_t info{};
    if (waitid(P_PID, static_cast<id_t>(g->pid), &info, WEXITED | WNOHANG | WNOWAIT) != 0 || info.si_pid == 0)
      return std::nullopt;
    ExitInfo ex;
    if (info.si_code == CLD_EXITED) {
      ex = ExitInfo::exited(
          info.si_status,
          info.si_status == 0 ? "" : "mpirun exited with status " + std::to_string(info.si_status));
    } else {
      ex = ExitInfo::failed(std::string("mpirun killed by signal ") + strsignal(info.si_status));
    }
    // The zombie still pins the pid, so signalling its session cannot hit a stranger.
    for (int p : session_members(sid)) kill(p, SIGKILL);
    waitpid(static_cast<pid_t>(g->pid), nullptr, 0);
    it->second = ex;
  }
  if (!session_members(sid).empty()) return std::nullopt;
  ExitInfo ex = *it->second;
  children_.erase(it);
  return ex;
}

void LocalLauncher::cancel(const LaunchHandle& h, bool force) {
  const LocalProcess* g = group_of(h);
  if (!g) return;
  if (leader_recycled(*g)) return;  // a stranger's process group now
  if (!force) {
    kill(static_cast<pid_t>(-g->pid), SIGTERM);  // mpirun forwards SIGTERM to the ranks
    return;
  }
  kill(static_cast<pid_t>(-g->pid), SIGKILL);
  for (int p : session_members(static_cast<int>(g->pid))) kill(p, SIGKILL);
}

bool LocalLauncher::reattach(const LaunchHandle& h) {
  const LocalProcess* g = group_of(h);
  return g && !leader_recycled(*g) && !session_members(static_cast<int>(g->pid)).empty();
}

}  // namespace rx::coord
