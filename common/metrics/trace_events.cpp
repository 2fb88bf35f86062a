#include "common/metrics/trace_events.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <thread>

#include "common/util/file_util.h"

namespace rx::metrics {

using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {
double us(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double, std::micro>(t.time_since_epoch()).count();
}
double round_ns(double v) { return std::round(v * 1000.0) / 1000.0; }  // µs with ns resolution

json metadata(int pid, const std::string& process) {
  return json::array(
      {{{"name", "process_name"}, {"ph", "M"}, {"pid", pid}, {"args", {{"name", process}}}},
       {{"name", "process_sort_index"}, {"ph", "M"}, {"pid", pid}, {"args", {{"sort_index", pid}}}},
       {{"name", "thread_name"},
        {"ph", "M"},
        {"pid", pid},
        {"tid", kTraceStepsTid},
        {"args", {{"name", "step phases"}}}},
       {{"name", "thread_name"},
        {"ph", "M"},
        {"pid", pid},
        {"tid", kTraceCommTid},
        {"args", {{"name", "all-reduce (per bucket: ready to finished)"}}}}});
}
}  // namespace

TraceRecorder::TraceRecorder(int rank, int world_size, std::string host, size_t max_events)
    : rank_(rank), world_(world_size), host_(std::move(host)), max_events_(max_events) {
  events_.reserve(std::min<size_t>(max_events_, 4096));
}

bool TraceRecorder::room() {
  if (events_.size() < max_events_) return true;
  ++dropped_;
  return false;
}

void TraceRecorder::on_phase(const PhaseRecord& r) {
  const int64_t step = first_step_ + steps_done_;
  if (r.phase == Phase::kOptimizer) ++steps_done_;
  if (!room()) return;
  const auto end =
      r.start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double, std::milli>(r.ms));
  events_.push_back({static_cast<int>(r.phase), step, -1, 0, r.start, r.start, end});
}

void TraceRecorder::on_bucket(int64_t step_in_run, size_t bucket, int64_t bytes, Clock::time_point ready,
                              Clock::time_point launched, Clock::time_point finished) {
  if (!room()) return;
  events_.push_back(
      {-1, first_step_ + step_in_run, static_cast<int64_t>(bucket), bytes, ready, launched, finished});
}

json TraceRecorder::to_json() const {
  json ev = metadata(rank_, "rank " + std::to_string(rank_) + " (" + host_ + ")");
  for (const auto& e : events_) {
    if (e.kind >= 0) {
      ev.push_back({{"name", phase_name(static_cast<Phase>(e.kind))},
                    {"cat", "phase"},
                    {"ph", "X"},
                    {"ts", round_ns(us(e.start))},
                    {"dur", round_ns(us(e.end) - us(e.start))},
                    {"pid", rank_},
                    {"tid", kTraceStepsTid},
                    {"args", {{"step", e.step}}}});
      continue;
    }
    const std::string name = "all-reduce bucket " + std::to_string(e.bucket);
    const std::string id =
        std::to_string(rank_) + "." + std::to_string(e.step) + "." + std::to_string(e.bucket);
    ev.push_back({{"name", name},
                  {"cat", "allreduce"},
                  {"ph", "b"},
                  {"id", id},
                  {"ts", round_ns(us(e.start))},
                  {"pid", rank_},
                  {"tid", kTraceCommTid},
                  {"args",
                   {{"step", e.step},
                    {"bucket", e.bucket},
                    {"bytes", e.bytes},
                    {"ready_us", round_ns(us(e.start))},
                    {"launched_us", round_ns(us(e.launched))},
                    {"finished_us", round_ns(us(e.end))}}}});
    ev.push_back({{"name", name},
                  {"cat", "allreduce"},
                  {"ph", "e"},
                  {"id", id},
                  {"ts", round_ns(us(e.end))},
                  {"pid", rank_},
                  {"tid", kTraceCommTid}});
  }
  return {{"traceEvents", std::move(ev)},
          {"displayTimeUnit", "ms"},
          {"otherData",
           {{"rank", rank_},
            {"world_size", world_},
            {"host", host_},
            {"time_base_us", round_ns(us(time_base_))},
            {"events", events_.size()},
            {"dropped_events", dropped_},
            {"max_events", max_events_}}}};
}

std::string rank_trace_path(const std::string& dir, int rank) {
  return dir + "/trace.rank" + std::to_string(rank) + ".json";
}

// [Trace clock] Every rank writes raw steady_clock microseconds plus its time base (its steady_clock
// reading right after a barrier). On one host steady_clock is CLOCK_MONOTONIC, one clock for every
// process, so the timestamps are kept as they are (exact relative timing) and only shifted so that
// the earliest time base is 0. Across hosts the clocks are unrelated: each rank is shifted by its own
// time base, i.e. the ranks' barrier exits are taken as simultaneous (error: the barrier's exit skew,
// microseconds on one switch, plus clock drift over the run).
MergeOutcome merge_traces(const MergeOptions& opts) {
  MergeOutcome out;
  out.path = opts.dir + "/trace.json";
  const auto deadline = std::chrono::steady_clock::now() + opts.wait;
  std::vector<json> files(static_cast<size_t>(opts.world_size));
  std::vector<std::string> why(static_cast<size_t>(opts.world_size), "no trace file");
  for (;;) {  // poll with a deadline: a rank file may appear late on a shared file system
    bool all = true;
    for (int r = 0; r < opts.world_size; ++r) {
      auto& f = files[static_cast<size_t>(r)];
      if (!f.is_null()) continue;
      const std::string path = rank_trace_path(opts.dir, r);
      std::error_code ec;
      if (!fs::is_regular_file(path, ec)) {
        all = false;
        continue;
      }
      json j = json::parse(read_file(path), nullptr, false);
      if (j.is_object() && j.contains("traceEvents") && j["traceEvents"].is_array() &&
          j.contains("otherData")) {
        f = std::move(j);
      } else {
        why[static_cast<size_t>(r)] = "unreadable trace file";
        f = json(false);  // seen, not usable: do not wait for it
      }
    }
    if (all || std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::vector<std::string> hosts;
  double min_base = 0;
  bool have_base = false;
  for (const auto& f : files) {
    if (!f.is_object()) continue;
    const auto& o = f["otherData"];
    hosts.push_back(o.value("host", ""));
    const double base = o.value("time_base_us", 0.0);
    min_base = have_base ? std::min(min_base, base) : base;
    have_base = true;
  }
  std::sort(hosts.begin(), hosts.end());
  hosts.erase(std::unique(hosts.begin(), hosts.end()), hosts.end());
  const bool one_host = hosts.size() <= 1;

  json events = json::array();
  json capped = json::object();
  for (int r = 0; r < opts.world_size; ++r) {
    auto& f = files[static_cast<size_t>(r)];
    if (!f.is_object()) {
      out.missing_ranks.push_back(r);
      for (auto& m :
           metadata(r, "rank " + std::to_string(r) + " (missing: " + why[static_cast<size_t>(r)] + ")"))
        events.push_back(std::move(m));
      continue;
    }
    const auto& o = f["otherData"];
    if (o.value("dropped_events", 0) > 0) capped[std::to_string(r)] = o["dropped_events"];
    for (auto& m : metadata(r, "rank " + std::to_string(r) + " (" + o.value("host", std::string("?")) + ")"))
      events.push_back(std::move(m));
    const double shift = one_host ? min_base : o.value("time_base_us", 0.0);
    for (auto& e : f["traceEvents"]) {
      if (!e.is_object() || e.value("ph", "") == "M" || !e.contains("ts")) continue;
      e["pid"] = r;
      e["ts"] = round_ns(e["ts"].get<double>() - shift);
      if (e.contains("args"))
        for (const char* k : {"ready_us", "launched_us", "finished_us"})
          if (e["args"].contains(k)) e["args"][k] = round_ns(e["args"][k].get<double>() - shift);
      events.push_back(std::move(e));
      ++out.events;
    }
    f = nullptr;  // free as we go
  }
  json doc = {{"traceEvents", std::move(events)},
              {"displayTimeUnit", "ms"},
              {"otherData",
               {{"world_size", opts.world_size},
                {"clock", one_host ? "steady_clock of one host (exact)"
                                   : "per-rank steady_clock aligned on a barrier"},
                {"hosts", hosts},
                {"missing_ranks", out.missing_ranks},
                {"capped_ranks_dropped_events", capped}}}};
  write_file_atomic(out.path, doc.dump() + "\n");
  return out;
}

}  // namespace rx::metrics
