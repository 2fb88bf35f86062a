// Hang detection without MPI: the report logic (who entered, who is missing and where it was last
// seen), the /proc probe against a really stopped child process, the collective trace, and the
// watchdog end to end on in-process thread ranks (the MPI version is hang_mpi_test.cpp).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "common/comm/hang/hang_report.h"
#include "common/comm/hang/hang_watchdog.h"
#include "common/comm/hang/traced_communicator.h"
#include "common/comm/thread/thread_communicator.h"

namespace rx::comm::hang {
namespace {

using json = nlohmann::json;

RankState state(int rank, int64_t posted, int64_t written_ms, const std::string& phase, int64_t step) {
  RankState s;
  s.run_id = "r1";
  s.rank = rank;
  s.host = "node" + std::to_string(rank);
  s.pid = 1000 + rank;
  s.last_posted = posted;
  s.last_done = posted - 1;
  s.step = step;
  s.phase = phase;
  s.written_ms = written_ms;
  s.last = CollectiveInfo{posted, "allreduce", "allreduce of 8 elements", step, phase, 2, 0.5};
  return s;
}

ReportInput three_ranks_one_stopped() {
  ReportInput in;
  in.reporter = 0;
  in.hung = CollectiveInfo{41, "allreduce", "allreduce of 27648 elements", 12, "gradient sync", 3, 60.4};
  in.hang_timeout_s = 60;
  in.stale_after_s = 3;
  in.now_ms = 1'000'000;
  in.states = {state(0, 41, 999'500, "gradient sync", 12), state(1, 40, 939'000, "backward", 12),
               state(2, 41, 999'800, "gradient sync", 12)};
  in.states[0]->oldest_pending = in.hung;
  in.states[2]->oldest_pending = in.hung;
  return in;
}

std::string fake_probe(const RankState& s) { return s.rank == 1 ? "stopped" : "running"; }

TEST(HangReport, NamesTheRankThatDidNotEnter) {
  const json r = build_report(three_ranks_one_stopped(), fake_probe);
  EXPECT_EQ(r["missing"], json::array({1}));
  EXPECT_EQ(r["entered"], json::array({0, 2}));
  EXPECT_TRUE(r["stalled"].empty());
  EXPECT_EQ(r["collective"]["seq"], 41);
  EXPECT_EQ(r["collective"]["bucket"], 3);
  EXPECT_EQ(r["detected_by"], 0);
  const json& r1 = r["ranks"][1];
  EXPECT_FALSE(r1["entered"].get<bool>());
  EXPECT_FALSE(r1["responding"].get<bool>());
  EXPECT_NEAR(r1["heartbeat_age_s"].get<double>(), 61.0, 1e-9);
  EXPECT_EQ(r1["process"], "stopped");
  EXPECT_EQ(r1["phase"], "backward");
  EXPECT_TRUE(r["ranks"][0]["responding"].get<bool>());
  const std::string msg = r["message"];
  EXPECT_NE(msg.find("collective #41 (allreduce of 27648 elements, step 12, bucket 3"), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("missing: rank 1 (node1 pid 1001, process stopped, no heartbeat for 61.0 s"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("phase backward"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("rank 2 ("), std::string::npos) << msg;
}

TEST(HangReport, NeverSeenRankIsMissing) {
  auto in = three_ranks_one_stopped();
  in.states[1].reset();
  const json r = build_report(in, fake_probe);
  EXPECT_EQ(r["missing"], json::array({1}));
  EXPECT_NE(r["message"].get<std::string>().find("rank 1 (never seen)"), std::string::npos);
}

TEST(HangReport, RankAheadCountsAsEntered) {
  auto in = three_ranks_one_stopped();
  in.states[1]->last_posted = 42;  // e.g. a broadcast root that already left collective 41
  const json r = build_report(in, fake_probe);
  EXPECT_TRUE(r["missing"].empty());
  EXPECT_NE(r["message"].get<std::string>().find("every rank entered it"), std::string::npos);
  // Stopped after entering: still named, as the rank that keeps the collective from finishing.
  EXPECT_EQ(r["stalled"], json::array({1}));
  EXPECT_NE(r["message"].get<std::string>().find("not progressing: rank 1 (node1 pid 1001, process stopped"),
            std::string::npos)
      << r["message"];
}

TEST(HangReport, AliveButBehindSaysHeartbeatAlive) {
  auto in = three_ranks_one_stopped();
  in.states[1]->written_ms = in.now_ms - 500;  // fresh heartbeat: running, stuck outside collectives
  const json r = build_report(in, [](const RankState&) { return std::string("running"); });
  EXPECT_TRUE(r["ranks"][1]["responding"].get<bool>());
  EXPECT_NE(r["message"].get<std::string>().find("heartbeat alive"), std::string::npos);
}

TEST(HangReport, NamesTheNodeWhoseRanksAllWentSilent) {
  ReportInput in = three_ranks_one_stopped();
  in.states.push_back(state(3, 38, 930'000, "backward", 12));
  in.states[0]->host = in.states[1]->host = "nodeA";
  in.states[2]->host = in.states[3]->host = "nodeB";
  in.states[2]->written_ms = 930'000;  // nodeB lost: neither of its ranks has a fresh heartbeat
  in.states[1]->written_ms = in.now_ms - 100;
  const json r = build_report(in, [](const RankState&) { return std::string("unknown"); });
  ASSERT_EQ(r["hosts"].size(), 2u) << r["hosts"];
  EXPECT_EQ(r["hosts"][0], json({{"host", "nodeA"}, {"ranks", {0, 1}}, {"silent", false}}));
  EXPECT_EQ(r["hosts"][1], json({{"host", "nodeB"}, {"ranks", {2, 3}}, {"silent", true}}));
  const std::string msg = r["message"];
  EXPECT_NE(msg.find("every rank silent on node(s): nodeB (ranks [2,3])"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("nodeA (ranks"), std::string::npos) << msg;
}

TEST(RankStateJson, RoundTripsAndNamesBadFields) {
  auto s = three_ranks_one_stopped().states[0].value();
  const RankState back = rank_state_from_json(json::parse(to_json(s).dump()));
  EXPECT_EQ(back.last_posted, 41);
  ASSERT_TRUE(back.oldest_pending.has_value());
  EXPECT_EQ(back.oldest_pending->bucket, 3);
  EXPECT_EQ(back.host, "node0");
  json bad = to_json(s);
  bad.erase("pid");
  try {
    rank_state_from_json(bad);
    FAIL() << "no error for a missing field";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("\"pid\""), std::string::npos) << e.what();
  }
  bad = to_json(s);
  bad["step"] = "twelve";
  EXPECT_THROW(rank_state_from_json(bad), DataError);
}

TEST(ProbeProcess, SeesAStoppedChildAndADeadOne) {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  RankState s;
  s.host = host;
  s.pid = getpid();
  EXPECT_EQ(probe_process(s), "running");
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    for (;;) pause();
  }
  s.pid = child;
  ASSERT_EQ(kill(child, SIGSTOP), 0);
  std::string seen;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while ((seen = probe_process(s)) != "stopped" && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(seen, "stopped");
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  EXPECT_EQ(probe_process(s), "dead");
  s.host = "another-host.invalid";
  EXPECT_EQ(probe_process(s), "unknown");
}

TEST(CollectiveTrace, TracksOldestPendingAndBucketOnce) {
  CollectiveTrace t;
  t.set_step(5);
  t.set_phase("backward");
  t.set_bucket(2);
  const int64_t a = t.post("allreduce", "allreduce of 4 elements");
  const int64_t b = t.post("allreduce", "allreduce of 8 elements");
  EXPECT_EQ(a, 1);
  EXPECT_EQ(b, 2);
  RankState s;
  t.snapshot(s);
  ASSERT_TRUE(s.oldest_pending.has_value());
  EXPECT_EQ(s.oldest_pending->seq, 1);
  EXPECT_EQ(s.oldest_pending->bucket, 2);
  EXPECT_EQ(s.last->bucket, -1);  // the bucket label applied to one collective only
  EXPECT_EQ(s.oldest_pending->step, 5);
  t.done(a);
  t.snapshot(s);
  EXPECT_EQ(s.oldest_pending->seq, 2);
  t.done(b);
  t.snapshot(s);
  EXPECT_FALSE(s.oldest_pending.has_value());
  EXPECT_EQ(s.last_posted, 2);
  EXPECT_EQ(s.last_done, 2);
}

// Two in-process ranks: rank 1 withholds its collective; rank 0's wait must end with a report naming
// rank 1 within hang_timeout_s plus a margin, long before the collective's own 60 s timeout.
TEST(HangWatchdog, ThreadRanksReportTheMissingRank) {
  const auto dir = std::filesystem::temp_directory_path() / ("rx_hang_unit_" + std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  auto group = make_thread_group(2);
  Communicator* inner1 = group[1].get();  // to let rank 0's collective finish at the end
  std::vector<std::shared_ptr<CollectiveTrace>> traces;
  std::vector<std::unique_ptr<TracedCommunicator>> comms;
  std::vector<std::unique_ptr<HangWatchdog>> dogs;
  std::atomic<int> mine_count{0};
  for (int r = 0; r < 2; ++r) {
    traces.push_back(std::make_shared<CollectiveTrace>());
    comms.push_back(std::make_unique<TracedCommunicator>(std::move(group[r]), traces[r]));
    WatchdogOptions o{dir.string(), "unit", r, 2, /*hang_timeout_s=*/0.5, /*interval_s=*/0.1, 60, 10};
    dogs.push_back(
        std::make_unique<HangWatchdog>(o, traces[r], [&](const json&, bool mine) { mine_count += mine; }));
  }
  mark_step(*comms[1], 7);
  mark_phase(*comms[1], "stuck in test");
  auto t = torch::ones({4});
  const auto t0 = std::chrono::steady_clock::now();
  std::string error;
  auto work0 = comms[0]->allreduce(t);
  try {
    work0->wait(Millis(60000));
  } catch (const HangDetected& e) {
    error = e.what();
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_NE(error.find("missing: rank 1"), std::string::npos) << error;
  EXPECT_NE(error.find("phase stuck in test"), std::string::npos) << error;
  EXPECT_GE(secs, 0.5);
  EXPECT_LT(secs, 5.0);
  const json report = json::parse(std::ifstream(dogs[0]->report_path()));
  EXPECT_EQ(report["missing"], json::array({1}));
  EXPECT_EQ(report["detected_by"], 0);
  // Rank 1 learns of the report through the folder and refuses further collectives.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!traces[1]->tripped() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_THROW(comms[1]->allreduce(t), HangDetected);
  EXPECT_EQ(mine_count.load(), 1);
  dogs.clear();
  auto t1 = torch::ones({4});
  inner1->allreduce(t1)->wait(Millis(10000));
  EXPECT_TRUE(work0->is_completed());
  RankState s0;
  traces[0]->snapshot(s0);
  EXPECT_FALSE(s0.oldest_pending.has_value());
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace rx::comm::hang
