#pragma once
// [Trace timeline] One rank's Chrome trace-event file (the JSON format Perfetto and chrome://tracing
// open): every step's phases as complete ("X") events on thread 0 and every bucket's all-reduce as
// an async ("b"/"e") slice from ready to finished on thread 1, whose args give ready, launched and
// finished. The recorder only consumes finished records (PhaseTimer's sink, the Reducer's bucket
// observer); it takes no timestamps of its own. merge_traces() joins the ranks' files into one.
#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/metrics/phase_timer.h"

namespace rx::metrics {

constexpr int kTraceStepsTid = 0;  // the thread ("track") of the step phases
constexpr int kTraceCommTid = 1;   // the track of the bucket all-reduces

class TraceRecorder {
 public:
  using Clock = std::chrono::steady_clock;
  // [Trace size] At most `max_events` events are kept (the first ones); the rest are counted and the
  // file's otherData says how many were dropped.
  TraceRecorder(int rank, int world_size, std::string host, size_t max_events);

  // The global step of the first step recorded (a resumed run does not start at 0).
  void set_first_step(int64_t step) { first_step_ = step; }
  // [Trace clock] This rank's steady_clock reading just after a barrier all ranks left together.
  void set_time_base(Clock::time_point t) { time_base_ = t; }

  // A phase lap; the optimizer phase ends a step.
  void on_phase(const PhaseRecord& r);
  // A bucket's all-reduce in the `step_in_run`-th synchronising step since recording began.
  void on_bucket(int64_t step_in_run, size_t bucket, int64_t bytes, Clock::time_point ready,
                 Clock::time_point launched, Clock::time_point finished);

  size_t events() const { return events_.size(); }
  size_t dropped() const { return dropped_; }
  // The rank's file: traceEvents with ts in microseconds of steady_clock (not yet shifted), and
  // otherData {rank, world_size, host, time_base_us, events, dropped_events, max_events}.
  nlohmann::json to_json() const;

 private:
  struct Event {
    int kind;  // a Phase, or -1 for a bucket all-reduce
    int64_t step;
    int64_t bucket;
    int64_t bytes;
    Clock::time_point start, launched, end;
  };
  bool room();

  int rank_, world_;
  std::string host_;
  size_t max_events_;
  int64_t first_step_ = 0;
  int64_t steps_done_ = 0;  // optimizer phases seen
  Clock::time_point time_base_ = Clock::now();
  std::vector<Event> events_;
  size_t dropped_ = 0;
};

struct MergeOptions {
  std::string dir;  // holds trace.rank<R>.json; trace.json is written there
  int world_size = 1;
  std::chrono::milliseconds wait{30000};  // for rank files not there yet (a shared file system lags)
};
struct MergeOutcome {
  std::vector<int> missing_ranks;  // no readable file within the wait
  size_t events = 0;
  std::string path;
};
// [Trace merge] Joins the rank files into <dir>/trace.json (written atomically): pid = rank with a
// process_name "rank R (host)", one common time base (see [Trace clock] in trace_events.cpp), and
// otherData naming missing and capped ranks. Never waits longer than opts.wait for missing files.
MergeOutcome merge_traces(const MergeOptions& opts);

std::string rank_trace_path(const std::string& dir, int rank);  // <dir>/trace.rank<R>.json

}  // namespace rx::metrics
