#include "common/comm/hang/hang_watchdog.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/util/error.h"

namespace rx::comm::hang {

using json = nlohmann::json;

namespace {
int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string this_host() {
  char buf[256] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "";
  return buf;
}

// Heartbeats need atomicity (a reader never sees half a file), not durability: no fsync.
void write_then_rename(const std::string& path, const std::string& content) {
  const std::string tmp = path + ".tmp." + std::to_string(getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << content;
    if (!out.flush()) throw IoError(tmp, "cannot write");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) throw IoError(path, "cannot rename into place: " + ec.message());
}

std::optional<json> read_json(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  json j = json::parse(ss.str(), nullptr, false);
  if (j.is_discarded()) return std::nullopt;
  return j;
}
}  // namespace

double default_interval(double hang_timeout_s) { return std::clamp(hang_timeout_s / 10, 0.2, 2.0); }

HangWatchdog::HangWatchdog(WatchdogOptions opts, std::shared_ptr<CollectiveTrace> trace,
                           std::function<void(const json&, bool)> on_hang)
    : opts_(std::move(opts)), trace_(std::move(trace)), on_hang_(std::move(on_hang)), host_(this_host()) {
  std::error_code ec;
  std::filesystem::create_directories(opts_.dir, ec);
  if (ec) throw IoError(opts_.dir, "cannot create the heartbeat folder: " + ec.message());
  beat();  // the first heartbeat exists before the first collective
  thread_ = std::thread([this] { loop(); });
}

HangWatchdog::~HangWatchdog() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::string HangWatchdog::report_path() const { return opts_.dir + "/hang-" + opts_.run_id + ".json"; }
std::string HangWatchdog::state_path(int rank) const {
  return opts_.dir + "/rank-" + std::to_string(rank) + ".json";
}

void HangWatchdog::loop() {
  const auto interval = std::chrono::duration<double>(opts_.interval_s);
  std::unique_lock lock(mu_);
  while (!stop_) {
    lock.unlock();
    try {
      beat();
      check();
    } catch (const std::exception& e) {  // a full disk must not kill training; say so and go on
      spdlog::warn("hang watchdog: {}", e.what());
    }
    lock.lock();
    cv_.wait_for(lock, interval, [this] { return stop_; });
  }
}

void HangWatchdog::beat() {
  RankState s;
  s.run_id = opts_.run_id;
  s.rank = opts_.rank;
  s.host = host_;
  s.pid = getpid();
  trace_->snapshot(s);
  s.written_ms = wall_ms();
  write_then_rename(state_path(opts_.rank), to_json(s).dump());
}

void HangWatchdog::check() {
  if (handled_) {
    // [Exit grace] The training thread fails the job at its next wait (HangDetected -> MPI_Abort). If it
    // is stuck elsewhere, this rank must not outlive the report: exit, and mpirun/srun end the rest.
    if (std::chrono::steady_clock::now() - tripped_at_ > std::chrono::duration<double>(opts_.exit_grace_s)) {
      spdlog::critical("hang reported {:.0f} s ago and this rank is still running: exiting",
                       opts_.exit_grace_s);
      spdlog::default_logger()->flush();
      std::_Exit(1);
    }
    return;
  }
  if (auto existing = read_json(report_path()); existing && existing->value("run_id", "") == opts_.run_id) {
    // [Let the reporter finish] This rank's failure takes the job down (MPI_Abort), so it waits until
    // the reporting rank has recorded and sent the report (the .done marker), at most delivery_wait_s.
    const auto now = std::chrono::steady_clock::now();
    if (!report_seen_at_) report_seen_at_ = now;
    const bool delivered = std::filesystem::exists(report_path() + ".done");
    if (delivered || now - *report_seen_at_ > std::chrono::duration<double>(opts_.delivery_wait_s))
      handle(*existing, false);
    return;
  }
  RankState mine;
  trace_->snapshot(mine);
  if (mine.oldest_pending && mine.oldest_pending->age_s >= opts_.hang_timeout_s) detect(*mine.oldest_pending);
}

std::optional<RankState> HangWatchdog::read_state(int rank) const {
  auto j = read_json(state_path(rank));
  if (!j) return std::nullopt;
  try {
    RankState s = rank_state_from_json(*j);
    if (s.run_id != opts_.run_id || s.rank != rank) return std::nullopt;
    return s;
  } catch (const DataError& e) {
    spdlog::warn("hang watchdog: {}: {}", state_path(rank), e.what());
    return std::nullopt;
  }
}

void HangWatchdog::detect(const CollectiveInfo& hung) {
  ReportInput in;
  in.reporter = opts_.rank;
  in.hung = hung;
  in.hang_timeout_s = opts_.hang_timeout_s;
  in.stale_after_s = 3 * opts_.interval_s + 1;
  in.now_ms = wall_ms();
  for (int r = 0; r < opts_.world_size; ++r) in.states.push_back(read_state(r));
  json report = build_report(in);
  report["run_id"] = opts_.run_id;
  // Claim: link() of a complete temporary file onto the report name fails for every rank but the first.
  const std::string tmp = report_path() + ".tmp." + std::to_string(opts_.rank);
  write_then_rename(tmp, report.dump(2) + "\n");
  const bool mine = ::link(tmp.c_str(), report_path().c_str()) == 0;
  const int err = errno;
  std::remove(tmp.c_str());
  if (mine) {
    handle(report, true);
    return;
  }
  if (err != EEXIST) {  // cannot claim on this file system: report anyway rather than stay silent
    spdlog::warn("hang watchdog: cannot create {}: {}", report_path(), std::strerror(err));
    handle(report, true);
    return;
  }
  if (auto other = read_json(report_path())) handle(*other, false);
}

void HangWatchdog::handle(const json& report, bool mine) {
  handled_ = true;
  tripped_at_ = std::chrono::steady_clock::now();
  const std::string message = report.value("message", std::string("hang reported"));
  if (mine)
    spdlog::error("{}", message);
  else
    spdlog::error("rank {} reported: {}", report.value("detected_by", -1), message);
  try {
    if (on_hang_) on_hang_(report, mine);
  } catch (const std::exception& e) {
    spdlog::error("hang watchdog: handling the report failed: {}", e.what());
  }
  if (mine) {
    std::ofstream done(report_path() + ".done");  // releases the other ranks (see check())
  }
  trace_->trip(message);
}

}  // namespace rx::comm::hang
