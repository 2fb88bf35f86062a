// Issue 13's findings, each as a request (or process) that misbehaved before the fix: the routing
// function with a FakeLauncher, the real LocalLauncher with a stand-in mpirun, real SQLite.
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/data/dataset.h"
#include "common/util/error.h"
#include "coordinator/http/router.h"
#include "coordinator/launch/local_launcher.h"
#include "coordinator/launch/proc_identity.h"
#include "coordinator/serve.h"
#include "coordinator/util/util.h"
#include "tests/coordinator/test_support.h"

namespace rx::coord {
namespace {

namespace http = boost::beast::http;
namespace fs = std::filesystem;
using nlohmann::json;
using namespace std::chrono_literals;

const json kTiny = {{"training.epochs", 1}, {"data.max_train_samples", 512}};
const bool kHaveFashion = fs::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz");

class HardeningTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(data_root());
    fs::create_directories(weights_root());
    open();
  }
  std::string data_root() const { return dir_.path() + "/data"; }
  std::string weights_root() const { return dir_.path() + "/weights"; }

  void open(int slots = 4) {
    state_.reset();
    service_.reset();
    ServiceOptions o = test_service_options(dir_.path() + "/state", slots);
    o.paths.data_roots.push_back(data_root());
    o.paths.weights_roots = {weights_root()};
    o.limits = limits_;
    Tokens t;
    t.add("alice", "atok", false);
    t.add("bob", "btok", false);
    t.add("root", "rtok", true);
    service_ = std::make_unique<JobService>(o, std::make_unique<FakeLauncher>(fake_), std::move(t));
    service_->recover();
    state_ = std::make_unique<ServiceState>(*service_);
  }

  Response call(http::verb v, const std::string& target, const std::string& body = "",
                const std::vector<std::pair<std::string, std::string>>& headers = {}) {
    Request r{v, target, 11};
    for (const auto& [k, val] : headers) r.set(k, val);
    r.body() = body;
    r.prepare_payload();
    return route(r, *state_);
  }
  Response get_as(const std::string& token, const std::string& target) {
    return call(http::verb::get, target, "", {{"Authorization", "Bearer " + token}});
  }
  Response submit_raw(const std::string& token, const json& overrides, int ranks = 1,
                      std::vector<std::pair<std::string, std::string>> headers = {}) {
    headers.emplace_back("Authorization", "Bearer " + token);
    json b = {{"config", "fashion_mnist_small"}, {"ranks", ranks}, {"overrides", overrides}};
    return call(http::verb::post, "/v1/jobs", b.dump(), headers);
  }
  std::string submit(const std::string& token = "atok", int ranks = 1, json overrides = kTiny) {
    auto r = submit_raw(token, overrides, ranks);
    EXPECT_EQ(r.result_int(), 201) << r.body();
    return json::parse(r.body())["id"].get<std::string>();
  }
  static json body(const Response& r) { return json::parse(r.body()); }
  static std::string field(const Response& r) {
    json j = json::parse(r.body(), nullptr, false);
    return j.is_object() && j["error"]["field"].is_string() ? j["error"]["field"].get<std::string>() : "";
  }
  std::string secret_of(const std::string& id) {
    for (const auto& s : fake_->started)
      if (s.job_id == id) return s.secret;
    ADD_FAILURE() << "job " << id << " was never started";
    return "";
  }

  TempDir dir_;
  Limits limits_;
  std::shared_ptr<FakeState> fake_ = std::make_shared<FakeState>();
  std::unique_ptr<JobService> service_;
  std::unique_ptr<ServiceState> state_;
};

// Finding 1: the caller chose dataset_size (and the coordinator allocated in proportion to it).
TEST_F(HardeningTest, ShardSizeComesFromTheJobNotTheCaller) {
  const std::string id = submit();
  const std::string q = "/v1/jobs/" + id + "/shards/0?epoch=0";
  auto r = get_as("atok", q + "&dataset_size=1000000");
  EXPECT_EQ(r.result_int(), 400) << r.body().substr(0, 200);
  EXPECT_EQ(field(r), "dataset_size");
  EXPECT_EQ(call(http::verb::get, q).result_int(), 401);  // no token, no secret
  EXPECT_EQ(get_as("btok", q).result_int(), 404);         // someone else's job
  EXPECT_EQ(call(http::verb::get, q, "", {{"X-Job-Secret", "nope"}}).result_int(), 401);
  if (!kHaveFashion) GTEST_SKIP() << "SKIPPED: /usr/share/datasets/fashion-mnist is not installed";
  r = call(http::verb::get, q, "", {{"X-Job-Secret", secret_of(id)}});  // the worker's way
  ASSERT_EQ(r.result_int(), 200) << r.body().substr(0, 200);
  EXPECT_EQ(body(r)["dataset_size"], 512);
  EXPECT_EQ(get_as("atok", q).result_int(), 200);
}

// Finding 3: every GET worked without a token and showed every user's jobs.
TEST_F(HardeningTest, ReadsNeedATokenAndUsersSeeTheirOwnJobs) {
  const std::string a = submit("atok"), b = submit("btok");
  for (const std::string& t :
       std::vector<std::string>{"/v1/jobs", "/v1/jobs/" + a, "/v1/jobs/" + a + "/metrics",
                                "/v1/jobs/" + a + "/logs", "/v1/jobs/" + a + "/result", "/metrics"}) {
    auto r = call(http::verb::get, t);
    EXPECT_EQ(r.result_int(), 401) << t;
    EXPECT_EQ(field(r), "Authorization") << t;
    EXPECT_EQ(get_as("wrong", t).result_int(), 401) << t;
  }
  EXPECT_EQ(call(http::verb::get, "/healthz").result_int(), 200);  // liveness stays open
  json l = body(get_as("atok", "/v1/jobs"));
  ASSERT_EQ(l["total"], 1);
  EXPECT_EQ(l["jobs"][0]["id"], a);
  EXPECT_EQ(body(get_as("rtok", "/v1/jobs"))["total"], 2);  // admin sees all
  for (const std::string& t :
       std::vector<std::string>{"/v1/jobs/" + b, "/v1/jobs/" + b + "/metrics", "/v1/jobs/" + b + "/logs",
                                "/v1/jobs/" + b + "/result"}) {
    auto r = get_as("atok", t);
    EXPECT_EQ(r.result_int(), 404) << t;  // exactly as if it did not exist
    EXPECT_EQ(body(r)["error"]["message"], "no job '" + b + "'") << t;
  }
  EXPECT_EQ(get_as("btok", "/v1/jobs/" + b).result_int(), 200);
  EXPECT_EQ(get_as("rtok", "/v1/jobs/" + b + "/logs").result_int(), 200);
  EXPECT_EQ(get_as("atok", "/metrics").result_int(), 200);
  // Cancel: the owner or an admin.
  auto r = call(http::verb::post, "/v1/jobs/" + b + "/cancel", "{}", {{"Authorization", "Bearer atok"}});
  EXPECT_EQ(r.result_int(), 404) << "someone else's job is not confirmed, not even by cancel";
  EXPECT_EQ(body(r)["error"]["message"], "no job '" + b + "'");
  r = call(http::verb::post, "/v1/jobs/" + b + "/cancel", "{}", {{"Authorization", "Bearer rtok"}});
  EXPECT_EQ(r.result_int(), 202) << r.body();
}

// Finding 11: the scheme is case-insensitive (RFC 7235); the token itself is not.
TEST_F(HardeningTest, BearerSchemeIsCaseInsensitive) {
  auto t = Tokens::from_pairs({{"alice", "atok"}});
  EXPECT_EQ(t.authenticate("bearer atok"), "alice");
  EXPECT_EQ(t.authenticate("BEARER atok"), "alice");
  EXPECT_EQ(t.authenticate("Bearer ATOK"), std::nullopt);
  EXPECT_EQ(t.authenticate("Bearerx atok"), std::nullopt);
  EXPECT_EQ(t.authenticate("bearer"), std::nullopt);
  auto r = call(http::verb::post, "/v1/jobs",
                json{{"config", "fashion_mnist_small"}, {"ranks", 1}, {"overrides", kTiny}}.dump(),
                {{"Authorization", "bEaReR atok"}});
  EXPECT_EQ(r.result_int(), 201) << r.body();
}

TEST(TokensFile, RolesAndErrorsNameTheLine) {
  TempDir d;
  const std::string p = d.path() + "/tokens";
  std::ofstream(p) << "# comment\nalice:atok\nroot:rtok admin\n";
  auto t = Tokens::load(p);
  EXPECT_FALSE(t.identify("Bearer atok")->admin);
  EXPECT_TRUE(t.identify("Bearer rtok")->admin);
  EXPECT_EQ(t.identify("Bearer rtok admin"), std::nullopt);
  std::ofstream(p) << "root:rtok superuser\n";
  try {
    Tokens::load(p);
    ADD_FAILURE() << "an unknown role was accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find(p + ":1"), std::string::npos) << e.what();
  }
}

// Finding 4: data.path / model.pretrained could name any file on the host.
TEST_F(HardeningTest, PathsAreConfinedToTheRoots) {
  fs::create_directories(data_root() + "/ds");
  fs::create_directories(dir_.path() + "/data2");
  fs::create_symlink("/etc", data_root() + "/etc-link");
  std::ofstream(weights_root() + "/w.pt") << "x";
  fs::create_symlink("/etc/passwd", weights_root() + "/passwd-link");
  struct Case {
    std::string key, value;
    int status;
  };
  const std::vector<Case> cases = {
      {"data.path", "/etc/shadow", 400},
      {"data.path", data_root() + "/etc-link/shadow", 400},  // a link inside a root, pointing out
      {"data.path", data_root() + "/../data2", 400},
      {"data.path", dir_.path() + "/data2", 400},  // shares the root's prefix, not its folder
      {"data.path", "/usr/share/datasets/../../../etc", 400},
      {"data.path", data_root() + "/ds", 201},
      {"data.path", data_root() + "/./ds/", 201},
      {"data.path", data_root() + "/not-yet-there", 201},  // under the root; the worker reports it missing
      {"model.pretrained", "/etc/passwd", 400},
      {"model.pretrained", weights_root() + "/passwd-link", 400},
      {"model.pretrained", data_root() + "/ds", 400},  // data roots are not weight roots
      {"model.pretrained", weights_root() + "/w.pt", 201},
  };
  for (const auto& c : cases) {
    json o = kTiny;
    o[c.key] = c.value;
    auto r = submit_raw("atok", o);
    EXPECT_EQ(r.result_int(), c.status) << c.key << "=" << c.value << ": " << r.body();
    if (c.status == 400) {
      EXPECT_EQ(field(r), c.key) << c.value;
      EXPECT_EQ(body(r)["error"]["code"], "path_not_allowed");
    }
  }
}

// Finding 7: a 1 MB data.path was stored as is; queued jobs per owner were unbounded.
TEST_F(HardeningTest, ConfigStringsAndQueuedJobsAreBounded) {
  json o = kTiny;
  o["data.path"] = data_root() + "/" + std::string(5000, 'x');
  auto r = submit_raw("atok", o);
  EXPECT_EQ(r.result_int(), 413) << r.body();
  EXPECT_EQ(field(r), "data.path");
  limits_.max_queued_per_owner = 2;
  limits_.max_ranks = 2;
  open(2);
  submit("atok", 2);  // runs
  submit("atok", 2);  // queued
  submit("atok", 2);  // queued
  r = submit_raw("atok", kTiny, 2);
  EXPECT_EQ(r.result_int(), 429) << r.body();
  EXPECT_NE(body(r)["error"]["message"].get<std::string>().find("--max-queued-per-owner"), std::string::npos);
  EXPECT_EQ(submit_raw("btok", kTiny, 1).result_int(), 201);  // a per-owner limit
  limits_.max_ranks = 1;
  open(2);
  r = submit_raw("btok", kTiny, 2);
  EXPECT_EQ(r.result_int(), 400);
  EXPECT_EQ(field(r), "ranks");
}

// Finding 8: reports were unbounded and accepted after the job ended.
TEST_F(HardeningTest, ReportsAreBoundedAndClosedWhenTheJobEnds) {
  limits_.max_reports_per_job = 3;
  limits_.max_report_bytes = 2048;
  open();
  const std::string id = submit();
  const std::string target = "/v1/jobs/" + id + "/reports";
  const std::vector<std::pair<std::string, std::string>> sec = {{"X-Job-Secret", secret_of(id)}};
  const json p = {{"type", "progress"}, {"step", 1}, {"ranks", json::array()}};
  json big = p;
  big["pad"] = std::string(4000, 'x');
  auto r = call(http::verb::post, target, big.dump(), sec);
  EXPECT_EQ(r.result_int(), 413) << r.body();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(call(http::verb::post, target, p.dump(), sec).result_int(), 202);
  r = call(http::verb::post, target, p.dump(), sec);
  EXPECT_EQ(r.result_int(), 429) << r.body();
  // The count survives a restart (it is read back from the store).
  const int64_t pid = service_->get(id)->pid;
  fake_->alive_on_reattach = {pid};
  open();
  EXPECT_EQ(call(http::verb::post, target, p.dump(), sec).result_int(), 429);
  limits_.max_reports_per_job = 100;
  open();
  ASSERT_EQ(call(http::verb::post, "/v1/jobs/" + id + "/cancel", "{}", {{"Authorization", "Bearer atok"}})
                .result_int(),
            202);
  fake_->exits[pid] = ExitInfo::exited(143, "terminated");
  service_->tick();
  ASSERT_EQ(body(get_as("atok", "/v1/jobs/" + id))["state"], "cancelled");
  r = call(http::verb::post, target,
           json{{"type", "result"}, {"record", {{"final_test_accuracy", 0.9}}}}.dump(), sec);
  EXPECT_EQ(r.result_int(), 409) << r.body();
  EXPECT_EQ(get_as("atok", "/v1/jobs/" + id + "/result").result_int(), 404);
}

// Finding 10: a reused Idempotency-Key with another body silently returned the first job.
TEST_F(HardeningTest, IdempotencyKeyReuseWithAnotherBodyIs409) {
  const std::vector<std::pair<std::string, std::string>> k = {{"Idempotency-Key", "k1"}};
  auto r1 = submit_raw("atok", kTiny, 1, k);
  ASSERT_EQ(r1.result_int(), 201);
  EXPECT_EQ(submit_raw("atok", kTiny, 1, k).result_int(), 200);  // a retry
  auto r = submit_raw("atok", kTiny, 2, k);
  EXPECT_EQ(r.result_int(), 409) << r.body();
  EXPECT_EQ(field(r), "Idempotency-Key");
  EXPECT_NE(body(r)["error"]["message"].get<std::string>().find(body(r1)["id"].get<std::string>()),
            std::string::npos);
  open();  // the body's digest is stored: still a conflict after a restart
  EXPECT_EQ(submit_raw("atok", kTiny, 2, k).result_int(), 409);
  EXPECT_EQ(submit_raw("atok", kTiny, 1, k).result_int(), 200);
}

// Finding 9: the logs response had no size cap (and tailing was quadratic in line length).
TEST_F(HardeningTest, LogResponseIsCapped) {
  limits_.max_log_bytes = 4096;
  open();
  const std::string id = submit();
  {
    std::ofstream log(service_->job_dir(id) + "/worker.log");
    log << "first\n" << std::string(3 << 20, 'y') << "z\n";  // one 3 MB line
  }
  auto r = get_as("atok", "/v1/jobs/" + id + "/logs?tail=2");
  ASSERT_EQ(r.result_int(), 200);
  EXPECT_EQ(r.body().size(), 4096u);
  EXPECT_EQ(r.body().substr(r.body().size() - 3), "yz\n");
  {
    std::ofstream log(service_->job_dir(id) + "/worker.log");
    log << "a\nb\nc";
  }
  EXPECT_EQ(get_as("atok", "/v1/jobs/" + id + "/logs?tail=2").body(), "b\nc\n");
  EXPECT_EQ(get_as("atok", "/v1/jobs/" + id + "/logs?tail=10").body(), "a\nb\nc\n");
}

// Finding 6: the dataset cache was keyed by the raw path string and never evicted.
TEST_F(HardeningTest, DatasetCacheIsCanonicalAndBounded) {
  open(8);  // every job below runs (and so has a secret)
  std::vector<std::string> dirs;
  for (int i = 0; i < 3; ++i) {
    dirs.push_back(data_root() + "/syn" + std::to_string(i));
    data::write_synthetic_cifar10(dirs.back(), 20, 4, static_cast<uint64_t>(i));
  }
  auto job_on = [&](const std::string& path) {
    return submit("atok", 1,
                  {{"training.epochs", 1},
                   {"data.source", "coordinator"},
                   {"data.format", "synthetic"},
                   {"data.path", path},
                   {"data.max_train_samples", 0}});
  };
  for (const std::string& p :
       {dirs[0], dirs[0] + "/", data_root() + "/./syn0", data_root() + "/syn1/../syn0"}) {
    const std::string id = job_on(p);
    auto r =
        call(http::verb::get, "/v1/jobs/" + id + "/shards/0/data", "", {{"X-Job-Secret", secret_of(id)}});
    ASSERT_EQ(r.result_int(), 200) << r.body();
  }
  EXPECT_EQ(service_->cached_datasets(), 1u);
  for (int i = 1; i < 3; ++i) {
    const std::string id = job_on(dirs[static_cast<size_t>(i)]);
    ASSERT_EQ(
        call(http::verb::get, "/v1/jobs/" + id + "/shards/0/data", "", {{"X-Job-Secret", secret_of(id)}})
            .result_int(),
        200);
  }
  EXPECT_EQ(service_->cached_datasets(), 2u);
}

// Finding 12: an exception escaping a handler ended the process.
TEST_F(HardeningTest, AnyExceptionIsA500AndTheServiceGoesOn) {
  // A launcher that throws something that is not even a std::exception: the launch fails cleanly...
  fake_->on_start = [](const LaunchSpec&) { throw 42; };
  const std::string id = submit();
  fake_->on_start = nullptr;
  EXPECT_EQ(body(get_as("atok", "/v1/jobs/" + id))["state"], "failed");
  // ...and where no one catches it (cancel), the request answers 500 instead of ending the process.
  const std::string run = submit();
  fake_->on_cancel = [](const LaunchHandle&) { throw 42; };
  auto r = call(http::verb::post, "/v1/jobs/" + run + "/cancel", "{}", {{"Authorization", "Bearer atok"}});
  fake_->on_cancel = nullptr;
  EXPECT_EQ(r.result_int(), 500) << r.body();
  EXPECT_EQ(body(r)["error"]["code"], "internal");
  EXPECT_EQ(call(http::verb::get, "/healthz").result_int(), 200);
  boost::asio::io_context ioc;
  int after = 0;
  boost::asio::post(ioc, [] { throw std::runtime_error("handler bug"); });
  boost::asio::post(ioc, [] { throw 7; });
  boost::asio::post(ioc, [&] { ++after; });
  run_guarded(ioc);  // returns once the queue is drained, despite the throws
  EXPECT_EQ(after, 1);
}

// Finding 5: a failed commit after the launch started the job again on every tick.
TEST_F(HardeningTest, FailedCommitAfterLaunchNeverStartsTheJobTwice) {
  sqlite3* blocker = nullptr;
  const std::string db = dir_.path() + "/state/jobs.db";
  fake_->on_start = [&](const LaunchSpec&) {  // a second writer holds the database: the next commit fails
    ASSERT_EQ(sqlite3_open(db.c_str(), &blocker), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(blocker, "BEGIN EXCLUSIVE", nullptr, nullptr, nullptr), SQLITE_OK);
  };
  const std::string id = submit("atok", 1);
  fake_->on_start = nullptr;
  EXPECT_EQ(body(get_as("atok", "/v1/jobs/" + id))["state"], "running");  // memory follows the processes
  for (int i = 0; i < 3; ++i) service_->tick();
  EXPECT_EQ(fake_->started.size(), 1u);
  sqlite3_exec(blocker, "ROLLBACK", nullptr, nullptr, nullptr);
  sqlite3_close(blocker);
  // On disk the job is "launching". A restart adopts what the launch left running...
  fake_->launched_alive[id] = 1000;
  open();
  auto j = service_->get(id);
  ASSERT_TRUE(j);
  EXPECT_EQ(j->state, JobState::kRunning);
  EXPECT_EQ(j->pid, 1000);
  EXPECT_EQ(fake_->started.size(), 1u);
}

TEST_F(HardeningTest, InterruptedLaunchWithNoProcessFailsAndIsNotRelaunched) {
  sqlite3* blocker = nullptr;
  const std::string db = dir_.path() + "/state/jobs.db";
  fake_->on_start = [&](const LaunchSpec&) {
    ASSERT_EQ(sqlite3_open(db.c_str(), &blocker), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(blocker, "BEGIN EXCLUSIVE", nullptr, nullptr, nullptr), SQLITE_OK);
  };
  const std::string id = submit("atok", 1);
  fake_->on_start = nullptr;
  sqlite3_exec(blocker, "ROLLBACK", nullptr, nullptr, nullptr);
  sqlite3_close(blocker);
  open();  // nothing of that launch lives
  service_->tick();
  auto j = service_->get(id);
  ASSERT_TRUE(j);
  EXPECT_EQ(j->state, JobState::kFailed);
  EXPECT_NE(j->error.find("while launching"), std::string::npos) << j->error;
  EXPECT_EQ(fake_->started.size(), 1u);
}

// Finding 5, process identity: a pid is only ours with the start time it had when we launched it.
TEST(LocalLauncherIdentity, RecycledPidIsNeitherAdoptedNorSignalled) {
  TempDir d;
  const std::string mpirun = d.path() + "/fake-mpirun";
  std::ofstream(mpirun) << "#!/bin/sh\nsleep 60\n";
  fs::permissions(mpirun, fs::perms::owner_all);
  fs::create_directories(d.path() + "/job/run");
  const int64_t before = now_ms();
  LocalLauncher first("/bin/true", mpirun);
  const LaunchSpec spec{"jident", d.path() + "/job", 1, "secret", "http://127.0.0.1:1"};
  const LaunchHandle started = first.start(spec);
  ASSERT_NE(started.local(), nullptr);
  const LocalProcess h = *started.local();
  ASSERT_GT(h.start_time, 0u);
  LocalProcess stranger = h;
  stranger.start_time = h.start_time + 1;  // what a recycled pid looks like

  LocalLauncher second("/bin/true", mpirun);  // a restarted coordinator
  EXPECT_TRUE(second.reattach(h));
  // What the restarted coordinator rebuilds from the job record (pid, proc_start) is that same process.
  const LaunchHandle recorded = second.from_record(h.pid, h.start_time);
  ASSERT_NE(recorded.local(), nullptr);
  EXPECT_EQ(recorded.local()->start_time, h.start_time);
  EXPECT_TRUE(second.reattach(recorded));
  EXPECT_FALSE(second.reattach(stranger));
  EXPECT_TRUE(second.poll(stranger).has_value());  // "gone", never waited on
  second.cancel(stranger, true);
  const auto deadline = std::chrono::steady_clock::now() + 300ms;
  while (std::chrono::steady_clock::now() < deadline) {  // it must stay alive: nothing was signalled
    auto st = proc_stat(h.pid);
    ASSERT_TRUE(st && st->state != 'Z') << "the process was signalled";
    std::this_thread::sleep_for(50ms);
  }
  // An interrupted launch is found from the pid the child recorded before exec.
  auto found = second.find_launched(spec, before);
  ASSERT_TRUE(found);
  ASSERT_NE(found->local(), nullptr);
  EXPECT_EQ(found->local()->pid, h.pid);
  EXPECT_EQ(found->local()->start_time, h.start_time);
  EXPECT_FALSE(second.find_launched(spec, now_ms() + 60000));  // older than the launch record
  EXPECT_FALSE(second.find_launched(LaunchSpec{"jother", spec.job_dir, 1, "", ""}, before));

  first.cancel(h, true);
  const auto end = std::chrono::steady_clock::now() + 10s;
  std::optional<ExitInfo> ex;
  while (!(ex = first.poll(h)) && std::chrono::steady_clock::now() < end) std::this_thread::sleep_for(20ms);
  EXPECT_TRUE(ex.has_value()) << "the job did not end after SIGKILL";
}

// Finding 14: a non-loopback --listen without tokens started silently.
TEST(ServeFlags, NonLoopbackListenNeedsTokensOrInsecure) {
  TempDir d;
  try {
    serve_main({"--state-dir", d.path(), "--listen", "0.0.0.0:0"}, d.path());
    ADD_FAILURE() << "serve started on 0.0.0.0 without --token-file";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("--token-file"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("--insecure"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace rx::coord
