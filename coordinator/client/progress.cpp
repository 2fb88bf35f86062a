#include "coordinator/client/progress.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <ostream>
#include <thread>

namespace rx::coord {

using nlohmann::json;

namespace {

bool finished(const json& j) {
  const std::string s = j.value("state", "");
  return s == "succeeded" || s == "failed" || s == "cancelled";
}

std::string fmt(const char* f, double v) {
  char buf[48];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string duration(double s) {
  if (!std::isfinite(s) || s < 0) return "-";
  const auto t = static_cast<int64_t>(std::llround(s));
  char buf[32];
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", static_cast<long long>(t / 3600),
                  static_cast<long long>(t / 60 % 60));
  else if (t >= 60)
    std::snprintf(buf, sizeof buf, "%lldm%02llds", static_cast<long long>(t / 60),
                  static_cast<long long>(t % 60));
  else
    std::snprintf(buf, sizeof buf, "%llds", static_cast<long long>(t));
  return buf;
}

std::optional<double> total_images_per_sec(const json& job) {
  if (!job.contains("ranks") || !job["ranks"].is_array()) return std::nullopt;
  double sum = 0;
  bool any = false;
  for (const auto& r : job["ranks"])
    if (r.contains("images_per_sec") && r["images_per_sec"].is_number()) {
      sum += r["images_per_sec"].get<double>();
      any = true;
    }
  return any ? std::optional<double>(sum) : std::nullopt;
}

std::string field(const json& j, const char* key) {
  return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : "-";
}

// Cuts to `cols` display columns (the line is ASCII) so a redraw never wraps.
std::string fit(std::string s, int cols) {
  if (cols > 0 && static_cast<int>(s.size()) > cols) s.resize(static_cast<size_t>(cols));
  return s;
}

}  // namespace

std::optional<int64_t> parse_iso8601_ms(const json& v) {
  if (!v.is_string()) return std::nullopt;
  const std::string s = v.get<std::string>();
  std::tm tm{};
  int ms = 0;
  if (std::sscanf(s.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                  &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms) != 7)
    return std::nullopt;
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return static_cast<int64_t>(timegm(&tm)) * 1000 + ms;
}

std::optional<double> job_fraction(const json& job) {
  if (job.value("state", "") == "succeeded") return 1.0;
  if (!job.contains("progress") || !job["progress"].is_object()) return std::nullopt;
  const json& p = job["progress"];
  auto num = [&](const char* k) { return p.contains(k) && p[k].is_number() ? p[k].get<double>() : -1.0; };
  const double epoch = num("epoch"), epochs = num("epochs"), step = num("step"), spe = num("steps_per_epoch");
  if (epoch < 1 || epochs <= 0 || spe <= 0) return std::nullopt;
  return std::clamp(((epoch - 1) * spe + std::max(0.0, step)) / (epochs * spe), 0.0, 1.0);
}

std::string progress_line(const json& job, int bar_width) {
  const auto f = job_fraction(job);
  const int filled = f ? static_cast<int>(std::lround(*f * bar_width)) : 0;
  std::string line = field(job, "id") + " ";
  char state[16];
  std::snprintf(state, sizeof state, "%-9s", field(job, "state").c_str());
  line += state;
  line += " [" + std::string(static_cast<size_t>(filled), '#') +
          std::string(static_cast<size_t>(bar_width - filled), '.') + "] " +
          (f ? fmt("%3.0f%%", *f * 100) : std::string("  -%"));
  const json& p = job.contains("progress") && job["progress"].is_object() ? job["progress"] : json::object();
  if (p.contains("epoch") && p["epoch"].is_number())
    line += " epoch " + p["epoch"].dump() + "/" + p.value("epochs", json()).dump() + " step " +
            p.value("step", json()).dump() + "/" + p.value("steps_per_epoch", json()).dump();
  if (job.contains("loss") && job["loss"].is_number())
    line += " loss " + fmt("%.4f", job["loss"].get<double>());
  if (job.contains("test_accuracy") && job["test_accuracy"].is_number())
    line += " acc " + fmt("%.2f%%", 100 * job["test_accuracy"].get<double>());
  if (auto ips = total_images_per_sec(job)) line += " " + fmt("%.0f", *ips) + " img/s";
  return line;
}

std::string eta_text(const json& job, int64_t now_ms) {
  const auto f = job_fraction(job);
  const auto started = parse_iso8601_ms(job.value("started_at", json()));
  if (job.value("state", "") != "running" || !f || *f <= 0 || !started) return "";
  const double elapsed = static_cast<double>(now_ms - *started) / 1000.0;
  return "ETA " + duration(elapsed * (1 - *f) / *f);
}

std::string summary_line(const json& job) {
  std::string line = field(job, "id") + " " + field(job, "name") + ": " + field(job, "state");
  const auto started = parse_iso8601_ms(job.value("started_at", json()));
  const auto ended = parse_iso8601_ms(job.value("finished_at", json()));
  if (started && ended) line += " after " + duration(static_cast<double>(*ended - *started) / 1000.0);
  if (job.contains("test_accuracy") && job["test_accuracy"].is_number())
    line += ", test accuracy " + fmt("%.2f%%", 100 * job["test_accuracy"].get<double>());
  if (auto ips = total_images_per_sec(job)) line += ", " + fmt("%.0f", *ips) + " img/s";
  if (job.contains("exit_code") && job["exit_code"].is_number())
    line += ", exit code " + job["exit_code"].dump();
  if (job.contains("error") && job["error"].is_string())
    line += ", error: " + job["error"].get<std::string>();
  return line;
}

int watch_jobs(const std::vector<std::string>& ids,
               const std::function<std::optional<json>(const std::string&)>& fetch, const WatchOptions& opts,
               std::ostream& out) {
  std::vector<json> jobs(ids.size());
  std::vector<std::string> shown(ids.size());  // last printed line without ETA (pipe mode)
  bool drawn = false;
  for (;;) {
    for (size_t i = 0; i < ids.size(); ++i) {
      if (!jobs[i].is_null() && finished(jobs[i])) continue;  // a finished job does not change
      auto j = fetch(ids[i]);
      if (!j) return 1;
      jobs[i] = std::move(*j);
    }
    const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
    if (opts.tty) {
      // [Redraw] Back up over the previous block, then rewrite each line, cleared to its end.
      if (drawn) out << "\x1b[" << ids.size() << "A";
      for (const auto& j : jobs) {
        const std::string eta = eta_text(j, now);
        out << "\r\x1b[2K" << fit(progress_line(j) + (eta.empty() ? "" : " " + eta), opts.columns) << "\n";
      }
      drawn = true;
    } else {
      for (size_t i = 0; i < jobs.size(); ++i) {
        std::string line = progress_line(jobs[i]);
        if (line == shown[i]) continue;
        const std::string eta = eta_text(jobs[i], now);
        out << line << (eta.empty() ? "" : " " + eta) << "\n";
        shown[i] = std::move(line);
      }
    }
    out.flush();
    if (std::all_of(jobs.begin(), jobs.end(), finished)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(opts.interval_ms));  // a refresh period, not a sync
  }
  out << "summary:\n";
  for (const auto& j : jobs) out << "  " << summary_line(j) << "\n";
  out.flush();
  return 0;
}

}  // namespace rx::coord
