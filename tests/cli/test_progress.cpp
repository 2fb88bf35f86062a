// The CLI's progress and summary lines as pure functions of the job JSON: null fields (a queued job),
// a finished job, an unparseable timestamp, the bar's ends.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "coordinator/client/progress.h"

namespace rx::coord {
namespace {

using nlohmann::json;

json job(const std::string& state) {
  return {{"id", "j1"},
          {"name", "demo"},
          {"state", state},
          {"progress",
           {{"epoch", nullptr}, {"epochs", nullptr}, {"step", nullptr}, {"steps_per_epoch", nullptr}}},
          {"loss", nullptr},
          {"test_accuracy", nullptr},
          {"ranks", json::array()},
          {"started_at", nullptr},
          {"finished_at", nullptr},
          {"exit_code", nullptr},
          {"error", nullptr}};
}

TEST(Progress, QueuedJobHasNoNumbers) {
  EXPECT_EQ(progress_line(job("queued"), 10), "j1 queued    [..........]   -%");
  EXPECT_EQ(eta_text(job("queued"), 0), "");
  EXPECT_FALSE(job_fraction(job("queued")).has_value());
}

TEST(Progress, RunningJobLineAndEta) {
  json j = job("running");
  j["progress"] = {{"epoch", 2}, {"epochs", 4}, {"step", 5}, {"steps_per_epoch", 10}};  // 15 of 40 steps
  j["loss"] = 0.25;
  j["test_accuracy"] = 0.8125;
  j["ranks"] = {{{"rank", 0}, {"images_per_sec", 100.0}}, {{"rank", 1}, {"images_per_sec", 50.5}}};
  j["started_at"] = "2026-01-02T03:04:05.000Z";
  EXPECT_EQ(progress_line(j, 8),
            "j1 running   [###.....]  38% epoch 2/4 step 5/10 loss 0.2500 acc 81.25% 150 img/s");
  const int64_t start = *parse_iso8601_ms(j["started_at"]);
  EXPECT_EQ(eta_text(j, start + 30000), "ETA 50s");      // 30 s for 3/8 -> 50 s for the other 5/8
  EXPECT_EQ(eta_text(j, start + 6000000), "ETA 2h46m");  // 10,000 s left
}

TEST(Progress, SucceededIsFullAndSummarised) {
  json j = job("succeeded");
  j["started_at"] = "2026-01-02T03:04:05.250Z";
  j["finished_at"] = "2026-01-02T03:06:10.250Z";
  j["test_accuracy"] = 0.9;
  j["exit_code"] = 0;
  EXPECT_EQ(progress_line(j, 4), "j1 succeeded [####] 100% acc 90.00%");
  EXPECT_EQ(summary_line(j), "j1 demo: succeeded after 2m05s, test accuracy 90.00%, exit code 0");
}

TEST(Progress, FailedSummaryCarriesTheError) {
  json j = job("failed");
  j["exit_code"] = 3;
  j["error"] = "rank 1 exited with 3";
  EXPECT_EQ(summary_line(j), "j1 demo: failed, exit code 3, error: rank 1 exited with 3");
}

TEST(Progress, TimestampsParsedStrictly) {
  EXPECT_EQ(parse_iso8601_ms(json("1970-01-01T00:00:01.500Z")), 1500);
  EXPECT_FALSE(parse_iso8601_ms(json("yesterday")).has_value());
  EXPECT_FALSE(parse_iso8601_ms(json(nullptr)).has_value());
  EXPECT_FALSE(parse_iso8601_ms(json(12)).has_value());
}

}  // namespace
}  // namespace rx::coord
