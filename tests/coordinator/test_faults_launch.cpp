// Issue 14: a cancel that arrives while a job is "launching" (its state committed, its processes not yet
// started) must still end every process the launch then starts. The launch of the real LocalLauncher
// (real mpirun, the stand-in worker tests/coordinator/fake_worker.sh on 2 ranks) is held at its start
// until the cancel is in: that window is microseconds in production and cannot be hit over HTTP.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <future>
#include <nlohmann/json.hpp>
#include <thread>

#include "coordinator/http/router.h"
#include "coordinator/launch/local_launcher.h"
#include "tests/coordinator/test_support.h"

namespace rx::coord {
namespace {

namespace http = boost::beast::http;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

// The real launcher, whose start() waits for the test's go-ahead (bounded) before starting anything.
class HeldLauncher : public LocalLauncher {
 public:
  HeldLauncher(std::string worker, std::shared_future<void> go, std::shared_ptr<std::promise<void>> entered)
      : LocalLauncher(std::move(worker)), go_(std::move(go)), entered_(std::move(entered)) {}
  LaunchHandle start(const LaunchSpec& spec) override {
    entered_->set_value();
    if (go_.wait_for(std::chrono::seconds(30)) != std::future_status::ready)
      throw std::runtime_error("the test never released the launch");
    return LocalLauncher::start(spec);
  }

 private:
  std::shared_future<void> go_;
  std::shared_ptr<std::promise<void>> entered_;
};

TEST(FaultsLaunch, CancelWhileLaunchingEndsTheRealProcesses) {
  TempDir dir;
  std::promise<void> go;
  auto entered = std::make_shared<std::promise<void>>();
  auto entered_f = entered->get_future();
  // self_url is a closed port: the stand-in's reports fail fast; nothing here needs them.
  ServiceOptions o = test_service_options(dir.path(), 2);
  JobService service(o, std::make_unique<HeldLauncher>(source_dir() + "/tests/coordinator/fake_worker.sh",
                                                       go.get_future().share(), entered));
  service.recover();
  ServiceState state(service);
  auto call = [&](http::verb v, const std::string& target, const std::string& body) {
    Request r{v, target, 11};
    r.body() = body;
    r.prepare_payload();
    return route(r, state);
  };
  // training.epochs 3: the stand-in runs until SIGTERM. A local submit launches on the calling thread.
  const json body = {
      {"config", "fashion_mnist_small"}, {"ranks", 2}, {"overrides", {{"training.epochs", 3}}}};
  std::string id;
  std::thread submitter([&] {
    auto r = call(http::verb::post, "/v1/jobs", body.dump());
    if (r.result_int() == 201) id = json::parse(r.body())["id"].get<std::string>();
  });
  ASSERT_EQ(entered_f.wait_for(std::chrono::seconds(30)), std::future_status::ready)
      << "the launch never began";
  // The job is committed as launching before start() is called: find it by listing.
  json list = json::parse(call(http::verb::get, "/v1/jobs", "").body());
  ASSERT_EQ(list["jobs"].size(), 1u) << list.dump();
  const std::string jid = list["jobs"][0]["id"].get<std::string>();
  EXPECT_EQ(list["jobs"][0]["state"], "launching");
  const auto t0 = Clock::now();
  auto r = call(http::verb::post, "/v1/jobs/" + jid + "/cancel", "{}");
  EXPECT_EQ(r.result_int(), 202) << r.body();
  EXPECT_EQ(service.get(jid)->state, JobState::kLaunching);  // nothing to signal yet
  go.set_value();
  submitter.join();
  ASSERT_EQ(id, jid);
  const int64_t pgid = service.get(jid)->pgid;
  ASSERT_GT(pgid, 1) << "the held launch started no process";
  // launch() sent the SIGTERM as soon as it had the process group; ticks reap it.
  while (Clock::now() - t0 < std::chrono::seconds(10) && service.get(jid)->state != JobState::kCancelled) {
    service.tick();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // tick period, not a synchronisation
  }
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_EQ(service.get(jid)->state, JobState::kCancelled) << "not cancelled within 10 s";
  EXPECT_TRUE(LocalLauncher::session_members(static_cast<int>(pgid)).empty()) << "processes left behind";
  std::printf("cancel while launching: every process gone %.2f s after the cancel\n", secs);
  if (!LocalLauncher::session_members(static_cast<int>(pgid)).empty())
    kill(static_cast<pid_t>(-pgid), SIGKILL);
}

}  // namespace
}  // namespace rx::coord
