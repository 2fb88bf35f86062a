#pragma once
// [CLI progress] `status --watch`: one line per job — bar, epoch and step, loss, accuracy, images/s,
// ETA — redrawn in place on a terminal, or printed once per change when stdout is a pipe or a CI log
// (a redraw there would be escape-code noise). The lines are pure functions of the job's JSON, so the
// two modes show the same text.
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace rx::coord {

// "2026-01-02T03:04:05.678Z" -> ms since the epoch; nullopt for null or anything else.
std::optional<int64_t> parse_iso8601_ms(const nlohmann::json& v);

// Fraction of the job's steps done (1 once succeeded), or nullopt before its first report.
std::optional<double> job_fraction(const nlohmann::json& job);

// The progress line without the ETA (what "changed" means) and the ETA text ("ETA 1m20s" or "").
std::string progress_line(const nlohmann::json& job, int bar_width = 20);
std::string eta_text(const nlohmann::json& job, int64_t now_ms);
std::string summary_line(const nlohmann::json& job);

struct WatchOptions {
  bool tty = false;        // redraw in place (ANSI cursor-up) instead of printing changes
  int interval_ms = 2000;  // between polls
  int columns = 0;         // terminal width for truncation; 0 = no limit
};

// Polls `fetch(id)` (the job's JSON, or nullopt after printing an error) for every id until all are
// finished, then prints a summary. Returns 0, or 1 if a fetch failed.
int watch_jobs(const std::vector<std::string>& ids,
               const std::function<std::optional<nlohmann::json>(const std::string&)>& fetch,
               const WatchOptions& opts, std::ostream& out);

}  // namespace rx::coord
