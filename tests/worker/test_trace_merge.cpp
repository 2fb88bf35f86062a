// The trace merge and the recorder's cap, on files made by real TraceRecorders: a missing rank gives
// a merged file that says so (after the bounded wait, not a hang), a capped rank is named.
#include <gtest/gtest.h>

#include <chrono>

#include "common/metrics/trace_events.h"
#include "common/util/file_util.h"
#include "tests/support/temp_dir.h"

using nlohmann::json;
using rx::metrics::Phase;
using rx::metrics::TraceRecorder;
using Clock = std::chrono::steady_clock;

namespace {
void record_steps(TraceRecorder& t, Clock::time_point t0, int steps) {
  for (int s = 0; s < steps; ++s) {
    auto at = t0 + std::chrono::milliseconds(10 * s);
    for (Phase p : {Phase::kData, Phase::kForward, Phase::kBackward, Phase::kComm, Phase::kOptimizer}) {
      t.on_phase({p, at, 1.0});
      at += std::chrono::milliseconds(1);
    }
    t.on_bucket(s, 0, 64, t0, t0 + std::chrono::microseconds(5), t0 + std::chrono::microseconds(9));
  }
}
}  // namespace

TEST(TraceMerge, MissingRankIsNamedAfterABoundedWait) {
  rx::testing::TempDir dir;
  const auto t0 = Clock::now();
  TraceRecorder r0(0, 2, "hostA", 1000);
  r0.set_time_base(t0);
  r0.set_first_step(7);  // a resumed run
  record_steps(r0, t0, 3);
  rx::write_file_atomic(rx::metrics::rank_trace_path(dir.path(), 0), r0.to_json().dump());
  const auto w0 = Clock::now();
  const auto out = rx::metrics::merge_traces({dir.path(), 2, std::chrono::milliseconds(300)});
  const double waited = std::chrono::duration<double>(Clock::now() - w0).count();
  EXPECT_GE(waited, 0.29);
  EXPECT_LT(waited, 5.0);
  EXPECT_EQ(out.missing_ranks, std::vector<int>{1});
  const json m = json::parse(rx::read_file(dir.path() + "/trace.json"));
  EXPECT_EQ(m["otherData"]["missing_ranks"], json::array({1}));
  bool named = false;
  int64_t first = -1;
  double min_ts = 1e300;
  for (const auto& e : m["traceEvents"]) {
    if (e["ph"] == "M" && e["name"] == "process_name" && e["pid"] == 1)
      named = e["args"]["name"].get<std::string>().find("missing") != std::string::npos;
    if (e.value("cat", "") == "phase" && first < 0) first = e["args"]["step"].get<int64_t>();
    if (e["ph"] != "M") min_ts = std::min(min_ts, e["ts"].get<double>());
  }
  EXPECT_TRUE(named);
  EXPECT_EQ(first, 7);
  EXPECT_NEAR(min_ts, 0.0, 1.0);  // shifted to the time base (one host: the earliest base is 0)
  EXPECT_EQ(out.events, 3u * (5 + 2));
}

TEST(TraceMerge, CapDropsTheRestAndSaysSo) {
  rx::testing::TempDir dir;
  const auto t0 = Clock::now();
  for (int r = 0; r < 2; ++r) {
    TraceRecorder t(r, 2, r == 0 ? "hostA" : "hostB", r == 0 ? 4 : 1000);
    t.set_time_base(t0 + std::chrono::seconds(r));  // hosts' clocks differ: each aligned on its own base
    record_steps(t, t0 + std::chrono::seconds(r), 2);
    if (r == 0) {
      EXPECT_EQ(t.events(), 4u);
      EXPECT_EQ(t.dropped(), 8u);
    }
    rx::write_file_atomic(rx::metrics::rank_trace_path(dir.path(), r), t.to_json().dump());
  }
  const auto out = rx::metrics::merge_traces({dir.path(), 2, std::chrono::milliseconds(0)});
  EXPECT_TRUE(out.missing_ranks.empty());
  const json m = json::parse(rx::read_file(dir.path() + "/trace.json"));
  EXPECT_EQ(m["otherData"]["capped_ranks_dropped_events"], json({{"0", 8}}));
  EXPECT_EQ(m["otherData"]["hosts"], json::array({"hostA", "hostB"}));
  for (const auto& e : m["traceEvents"]) {
    if (e["ph"] == "b") {
      EXPECT_NEAR(e["ts"].get<double>(), 0.0, 1.0) << e.dump();  // both barrier-aligned
    }
  }
}
