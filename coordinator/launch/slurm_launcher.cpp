#include "coordinator/launch/slurm_launcher.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>

#include "common/util/error.h"
#include "common/util/file_util.h"
#include "coordinator/util/util.h"

extern char** environ;

namespace rx::coord {

namespace {

struct CommandResult {
  int status = -1;  // exit status; -1 when it did not exit normally (timeout, signal, exec failure)
  bool timed_out = false;
  std::string out, err;
};

// [run_command] fork+execvp of an argument vector (never a shell), stdout/stderr captured through
// pipes, SIGKILL at the deadline. `env` replaces the environment when non-empty.
CommandResult run_command(const std::vector<std::string>& args, int timeout_ms,
                          const std::vector<std::string>& env = {}) {
  std::vector<char*> argv;
  std::vector<std::string> a = args;
  for (auto& s : a) argv.push_back(s.data());
  argv.push_back(nullptr);
  std::vector<std::string> e = env;
  std::vector<char*> envp;
  for (auto& s : e) envp.push_back(s.data());
  envp.push_back(nullptr);
  int out_pipe[2], err_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0) throw IoError(args[0], std::string("pipe: ") + std::strerror(errno));
  if (pipe2(err_pipe, O_CLOEXEC) != 0) {
    ::close(out_pipe[0]);
    ::close(out_pipe[1]);
    throw IoError(args[0], std::string("pipe: ") + std::strerror(errno));
  }
  const pid_t pid = fork();
  if (pid < 0) {
    for (int fd : {out_pipe[0], out_pipe[1], err_pipe[0], err_pipe[1]}) ::close(fd);
    throw IoError(args[0], std::string("fork: ") + std::strerror(errno));
  }
  if (pid == 0) {  // async-signal-safe calls only
    setpgid(0, 0);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    signal(SIGPIPE, SIG_DFL);
    int null_fd = ::open("/dev/null", O_RDONLY);
    if (null_fd >= 0) dup2(null_fd, 0);
    dup2(out_pipe[1], 1);
    dup2(err_pipe[1], 2);
    if (env.empty())
      execvp(argv[0], argv.data());
    else
      execvpe(argv[0], argv.data(), envp.data());
    const char msg[] = "exec failed\n";
    ssize_t w = write(2, msg, sizeof msg - 1);
    (void)w;
    _exit(127);
  }
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  CommandResult r;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  int open_fds = 2;
  while (open_fds > 0) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      r.timed_out = true;
      kill(-pid, SIGKILL);
      kill(pid, SIGKILL);
      break;
    }
    int n = ::poll(fds, 2, static_cast<int>(left.count()));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char buf[4096];
      ssize_t got = ::read(fds[i].fd, buf, sizeof buf);
      if (got > 0) {
        (i == 0 ? r.out : r.err).append(buf, static_cast<size_t>(got));
      } else if (got == 0 || errno != EINTR) {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  for (auto& f : fds)
    if (f.fd >= 0) ::close(f.fd);
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  if (!r.timed_out && WIFEXITED(st)) r.status = WEXITSTATUS(st);
  return r;
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\r')) s.pop_back();
  size_t b = 0;
  while (b < s.size() && s[b] == ' ') ++b;
  return s.substr(b);
}

std::string describe(const std::vector<std::string>& args, const CommandResult& r) {
  std::string what = args[0] + (args.size() > 1 ? " " + args[1] : "");
  if (r.timed_out) return what + ": timed out";
  return what + ": exit " + std::to_string(r.status) + ": " + trim(r.err.empty() ? r.out : r.err);
}

// value of " key=" in a `scontrol -o` line, up to the next space (or to `until` when given)
std::string field(const std::string& line, const std::string& key, const std::string& until = "") {
  size_t p = line.rfind(key + "=", 0) == 0 ? 0 : line.find(" " + key + "=");
  if (p == std::string::npos) return "";
  p = line.find('=', p) + 1;
  size_t e = until.empty() ? line.find(' ', p) : line.find(" " + until + "=", p);
  if (e == std::string::npos) e = until.empty() ? line.size() : line.find(' ', p);
  return trim(line.substr(p, e == std::string::npos ? std::string::npos : e - p));
}

void parse_exit(const std::string& rc_sig, SlurmJobInfo& info) {
  const auto colon = rc_sig.find(':');
  if (colon == std::string::npos) return;
  try {
    info.exit_code = std::stoi(rc_sig.substr(0, colon));
    info.exit_signal = std::stoi(rc_sig.substr(colon + 1));
  } catch (const std::exception&) {
    info.exit_code.reset();
  }
}

}  // namespace

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string render_sbatch(const std::string& tmpl,
                          const std::vector<std::pair<std::string, std::string>>& settings) {
  // The job's layout comes from sbatch's argv (--ntasks); the template's node/task lines would conflict.
  std::istringstream in(tmpl);
  std::ostringstream out;
  std::string line;
  bool marker = false;
  while (std::getline(in, line)) {
    if (line.rfind("#SBATCH --nodes", 0) == 0 || line.rfind("#SBATCH --ntasks", 0) == 0 ||
        line.rfind("#SBATCH -N", 0) == 0 || line.rfind("#SBATCH -n", 0) == 0)
      continue;
    out << line << "\n";
    if (!marker && line.find("@rx-settings@") != std::string::npos) {
      marker = true;
      for (const auto& [k, v] : settings) out << k << "=" << shell_quote(v) << "\n";
    }
  }
  if (!marker)
    throw IoError("sbatch template", "has no '# @rx-settings@' line to insert the job's values after");
  return out.str();
}

SlurmJobInfo parse_scontrol_job(const std::string& line) {
  SlurmJobInfo info;
  info.state = field(line, "JobState");
  if (info.state.empty()) return info;
  info.known = true;
  info.reason = field(line, "Reason", "Dependency");
  parse_exit(field(line, "ExitCode"), info);
  return info;
}

SlurmJobInfo parse_sacct_line(const std::string& line) {
  SlurmJobInfo info;
  const auto bar = line.find('|');
  if (bar == std::string::npos) return info;
  std::istringstream st(line.substr(0, bar));
  st >> info.state;  // "CANCELLED by 0" -> CANCELLED
  if (info.state.empty()) return info;
  info.known = true;
  parse_exit(trim(line.substr(bar + 1)), info);
  return info;
}

SlurmMapping map_slurm_state(const SlurmJobInfo& info) {
  SlurmMapping m;
  const std::string& s = info.state;
  auto one_of = [&](std::initializer_list<const char*> names) {
    for (const char* n : names)
      if (s == n) return true;
    return false;
  };
  if (!info.known) {
    m.live = false;
    m.exit = ExitInfo::unknown("exit status unknown: Slurm has no record of the job any more");
    return m;
  }
  if (one_of({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "PREEMPTED", "RESV_DEL_HOLD"})) {
    m.queued = true;
    return m;
  }
  if (one_of({"RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT",
              "RESIZING", "SPECIAL_EXIT"}))
    return m;
  m.live = false;
  if (s == "COMPLETED") {
    m.exit = ExitInfo::exited(0);
  } else if (s == "CANCELLED") {
    m.exit = ExitInfo::cancelled("cancelled in Slurm", info.exit_code);
  } else {  // FAILED, TIMEOUT, NODE_FAIL, OUT_OF_MEMORY, BOOT_FAIL, DEADLINE, REVOKED, ...
    std::string reason = "slurm: " + s;
    if (info.exit_code)
      reason += " (exit " + std::to_string(*info.exit_code) + ":" + std::to_string(info.exit_signal) + ")";
    if (!info.reason.empty() && info.reason != "None") reason += ", reason " + info.reason;
    std::optional<int> code;
    if (info.exit_code && *info.exit_code != 0) code = info.exit_code;
    m.exit = ExitInfo::failed(std::move(reason), code);
  }
  return m;
}

SlurmLauncher::SlurmLauncher(SlurmOptions opts) : opts_(std::move(opts)) {}

LaunchHandle SlurmLauncher::start(const LaunchSpec& spec) {
  RX_CHECK(!spec.secret.empty(), "job secret must be set");
  if (spec.job_dir.find_first_of("%\\") != std::string::npos)
    throw IoError(spec.job_dir, "Slurm would expand '%' or '\\' in the output path; use another --state-dir");
  const std::string script =
      render_sbatch(read_file(opts_.template_path), {{"RX_CONFIG", spec.job_dir + "/config.json"},
                                                     {"RX_RUN_DIR", spec.job_dir + "/run"},
                                                     {"RX_WORKER", opts_.worker},
                                                     {"RX_JOB_ID", spec.job_id},
                                                     {"RX_COORDINATOR", spec.coordinator_url}});
  const std::string path = spec.job_dir + "/job.sbatch";
  {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    if (!f || !(f << script) || !f.flush()) throw IoError(path, "cannot write");
  }
  std::vector<std::string> args = {"sbatch",
                                   "--parsable",
                                   "--job-name=rx-" + spec.job_id,
                                   "--ntasks=" + std::to_string(spec.world_size),
                                   "--output=" + spec.job_dir + "/worker.log",
                                   "--open-mode=append",
                                   "--chdir=" + spec.job_dir,
                                   "--export=ALL"};
  args.insert(args.end(), opts_.sbatch_args.begin(), opts_.sbatch_args.end());
  args.push_back(path);
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e)
    if (std::strncmp(*e, "RX_JOB_SECRET=", 14) != 0) env.emplace_back(*e);
  env.push_back("RX_JOB_SECRET=" + spec.secret);
  const CommandResult r = run_command(args, opts_.command_timeout_ms, env);
  if (r.status != 0) throw IoError("sbatch", describe(args, r));
  const std::string first = trim(r.out.substr(0, r.out.find_first_of(";\n")));
  int64_t id = 0;
  try {
    size_t used = 0;
    id = std::stoll(first, &used);
    if (used != first.size() || id <= 0) throw std::invalid_argument(first);
  } catch (const std::exception&) {
    throw IoError("sbatch", "unexpected --parsable output '" + trim(r.out) + "'");
  }
  spdlog::info("job {}: submitted to Slurm as job {}", spec.job_id, id);
  std::lock_guard<std::mutex> lock(mu_);
  seen_[id] = Seen{now_ms(), SlurmMapping{true, true, std::nullopt},
                   "slurm job " + std::to_string(id) + ": submitted", 0};
  return BatchJob{id};
}

SlurmJobInfo SlurmLauncher::query(int64_t id, bool* answered) {
  *answered = true;
  const std::string sid = std::to_string(id);
  std::vector<std::string> sc = {"scontrol", "show", "job", "-o", sid};
  CommandResult r = run_command(sc, opts_.command_timeout_ms);
  if (r.status == 0) {
    SlurmJobInfo info = parse_scontrol_job(trim(r.out));
    if (info.known) return info;
  }
  const bool forgotten = r.status != 0 && r.err.find("Invalid job id") != std::string::npos;
  if (!forgotten) {  // slurmctld down or slow: say nothing rather than something wrong
    spdlog::warn("slurm job {}: {}", id, describe(sc, r));
    *answered = false;
    return {};
  }
  // slurmctld purged it (MinJobAge); the accounting database may still know how it ended.
  std::vector<std::string> sa = {"sacct", "-n", "-X", "-P", "-j", sid, "-o", "State,ExitCode"};
  CommandResult a = run_command(sa, opts_.command_timeout_ms);
  if (a.status == 0) {
    std::istringstream lines(a.out);
    std::string line;
    if (std::getline(lines, line)) {
      SlurmJobInfo info = parse_sacct_line(trim(line));
      if (info.known) return info;
    }
  }
  return {};  // known == false: the job is gone and its end unknown
}

// The Slurm job id of a handle; 0 when it names none.
static int64_t slurm_id(const LaunchHandle& h) {
  const BatchJob* b = h.batch();
  return b && b->id > 0 ? b->id : 0;
}

std::optional<ExitInfo> SlurmLauncher::poll(const LaunchHandle& h) {
  const int64_t id = slurm_id(h);
  if (id == 0) return ExitInfo::failed("no Slurm job recorded");
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = seen_.find(id);
    if (it != seen_.end() && now_ms() - it->second.checked_ms < opts_.poll_interval_ms)
      return it->second.mapping.exit;
  }
  bool answered = false;
  const SlurmJobInfo info = query(id, &answered);
  std::lock_guard<std::mutex> lock(mu_);
  Seen& s = seen_[id];
  s.checked_ms = now_ms();
  if (!answered) return std::nullopt;
  s.mapping = map_slurm_state(info);
  s.detail = "slurm job " + std::to_string(id) + " " + info.state;
  if (!info.reason.empty() && info.reason != "None") s.detail += " (" + info.reason + ")";
  auto ex = s.mapping.exit;
  if (ex) seen_.erase(id);
  return ex;
}

void SlurmLauncher::cancel(const LaunchHandle& h, bool force) {
  const int64_t id = slurm_id(h);
  if (id == 0) return;
  if (force) {  // the service repeats this every tick past the grace period: once every 5 s is enough
    std::lock_guard<std::mutex> lock(mu_);
    Seen& s = seen_[id];
    if (now_ms() - s.force_ms < 5000) return;
    s.force_ms = now_ms();
  }
  std::vector<std::string> args = {"scancel"};
  if (force) args.insert(args.end(), {"--signal=KILL", "--full"});
  args.push_back(std::to_string(id));
  const CommandResult r = run_command(args, opts_.command_timeout_ms);
  if (r.status != 0) spdlog::warn("slurm job {}: {}", id, describe(args, r));
}

bool SlurmLauncher::reattach(const LaunchHandle& h) {
  const int64_t id = slurm_id(h);
  if (id == 0) return false;
  bool answered = false;
  const SlurmJobInfo info = query(id, &answered);
  // Unanswered (slurmctld down): keep it and let poll find out. A job Slurm knows stays ours, even an
  // ended one: poll then reports how it ended instead of "processes gone".
  return !answered || info.known;
}

std::optional<LaunchHandle> SlurmLauncher::find_launched(const LaunchSpec& spec, int64_t) {
  // --me: only this user's jobs; another cluster user's job that took the name is never adopted.
  const std::vector<std::string> args = {"squeue", "-h", "--me", "-o", "%i", "--name=rx-" + spec.job_id};
  const CommandResult r = run_command(args, opts_.command_timeout_ms);
  if (r.status != 0) {
    spdlog::warn("job {}: cannot ask Slurm for an interrupted launch: {}", spec.job_id, describe(args, r));
    return std::nullopt;
  }
  std::istringstream lines(r.out);
  std::string first;
  if (!(lines >> first)) return std::nullopt;
  try {
    size_t used = 0;
    const int64_t id = std::stoll(first, &used);
    if (used == first.size() && id > 0) return BatchJob{id};
  } catch (const std::exception&) {
  }
  return std::nullopt;
}

LiveInfo SlurmLauncher::live_info(const LaunchHandle& h) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = seen_.find(slurm_id(h));
  if (it == seen_.end()) return {};
  return LiveInfo{it->second.mapping.queued, it->second.mapping.queued ? it->second.detail : ""};
}

}  // namespace rx::coord
