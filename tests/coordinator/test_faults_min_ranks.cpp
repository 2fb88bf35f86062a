// Issue 14, [Fewer ranks]: how a due relaunch is sized when fewer slots are free than the job asked for
// (the e2e test coordinator_faults_matrix_fewer_ranks runs the shrink with real processes). Real routing
// function and SQLite store; a FakeLauncher stands in for mpirun (tests/coordinator/test_support.h).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "coordinator/http/router.h"
#include "tests/coordinator/test_support.h"

namespace rx::coord {
namespace {

namespace http = boost::beast::http;
using nlohmann::json;

class MinRanksTest : public ::testing::Test {
 protected:
  void open(int slots) {  // a coordinator (re)started on the same state folder with `slots`
    state_.reset();
    service_.reset();
    ServiceOptions o = test_service_options(dir_.path(), slots);
    o.restart_backoff_ms = 0;
    service_ = std::make_unique<JobService>(o, std::make_unique<FakeLauncher>(fake_));
    service_->recover();
    state_ = std::make_unique<ServiceState>(*service_);
  }
  std::string submit(int ranks, int min_ranks) {
    json b = {
        {"config", "fashion_mnist_small"}, {"ranks", ranks}, {"max_restarts", 2}, {"min_ranks", min_ranks}};
    Request r{http::verb::post, "/v1/jobs", 11};
    r.body() = b.dump();
    r.prepare_payload();
    auto res = route(r, *state_);
    EXPECT_EQ(res.result_int(), 201) << res.body();
    return json::parse(res.body())["id"].get<std::string>();
  }
  json get(const std::string& id) { return json::parse(*service_->job_body(id)); }
  void exit_with(const std::string& id, std::optional<int> code) {
    fake_->exits[service_->get(id)->pid] =
        code ? ExitInfo::exited(*code, *code == 0 ? "" : "exit status 1") : ExitInfo::failed("killed");
  }
  void keep_alive_over_restart(const std::string& id) {
    fake_->alive_on_reattach.insert(service_->get(id)->pid);
  }

  TempDir dir_;
  std::shared_ptr<FakeState> fake_ = std::make_shared<FakeState>();
  std::unique_ptr<JobService> service_;
  std::unique_ptr<ServiceState> state_;
};

// In each test the job's processes end while the coordinator is down (not re-attached), so the restarted
// coordinator finds it restarting, with c (1 rank) still running and holding a slot.

TEST_F(MinRanksTest, ShrinksToTheFreeSlotsAtLeastMinRanks) {
  open(4);
  const std::string a = submit(3, 2), c = submit(1, 1);
  ASSERT_EQ(get(a)["state"], "running");
  ASSERT_EQ(get(c)["state"], "running");
  keep_alive_over_restart(c);
  open(3);  // one slot lost; c holds one: 2 free for a (asked 3, min_ranks 2)
  EXPECT_EQ(get(a)["state"], "restarting");
  service_->tick();
  const json j = get(a);
  ASSERT_EQ(j["state"], "running") << j.dump();
  EXPECT_EQ(j["world_size"], 2);
  ASSERT_EQ(j["attempts"].size(), 2u);
  EXPECT_EQ(j["attempts"][0]["world_size"], 3);
  EXPECT_EQ(j["attempts"][1]["world_size"], 2);
  EXPECT_EQ(fake_->started.back().job_id, a);
  EXPECT_EQ(fake_->started.back().world_size, 2);
  EXPECT_TRUE(fake_->started.back().resume);
}

TEST_F(MinRanksTest, BelowMinRanksItWaitsThenRunsOnTheRanksAskedFor) {
  open(4);
  const std::string a = submit(3, 3), c = submit(1, 1);
  keep_alive_over_restart(c);
  open(3);  // 2 free for a, below its min_ranks 3: it stays restarting
  service_->tick();
  service_->tick();
  EXPECT_EQ(get(a)["state"], "restarting") << get(a).dump();
  EXPECT_EQ(get(a)["attempts"].size(), 1u);
  exit_with(c, 0);
  service_->tick();  // c is reaped, then a fits: all 3
  const json j = get(a);
  ASSERT_EQ(j["state"], "running") << j.dump();
  EXPECT_EQ(j["world_size"], 3);
  EXPECT_EQ(j["attempts"][1]["world_size"], 3);
}

TEST_F(MinRanksTest, FailsNamingMinRanksWhenTheCoordinatorHasFewerSlots) {
  open(4);
  const std::string a = submit(3, 3);
  open(2);
  service_->tick();
  const json j = get(a);
  EXPECT_EQ(j["state"], "failed") << j.dump();
  EXPECT_NE(j["error"].get<std::string>().find("min_ranks"), std::string::npos) << j["error"];
  EXPECT_EQ(j["attempts"].size(), 1u);
}

}  // namespace
}  // namespace rx::coord
