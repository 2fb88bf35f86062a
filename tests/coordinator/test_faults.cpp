// Issue 14, coordinator side: hang reports (stored, shown, logged, kept over a restart) and results
// taken from the job folder when the worker's result report never arrived. Real routing function,
// real SQLite store; a FakeLauncher stands in for mpirun (tests/coordinator/test_support.h).
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/config/job_config.h"
#include "common/util/sha256.h"
#include "coordinator/http/router.h"
#include "coordinator/util/util.h"
#include "tests/coordinator/test_support.h"

namespace rx::coord {
namespace {

namespace http = boost::beast::http;
using nlohmann::json;

class FaultsTest : public ::testing::Test {
 protected:
  void SetUp() override { open(); }
  void open() {
    state_.reset();
    service_.reset();
    ServiceOptions o = test_service_options(dir_.path(), 10);  // 10 slots: every job of a test runs at once
    o.limits.max_report_bytes = 8 << 10;
    service_ = std::make_unique<JobService>(o, std::make_unique<FakeLauncher>(fake_),
                                            Tokens::from_pairs({{"alice", "atok"}}));
    service_->recover();
    state_ = std::make_unique<ServiceState>(*service_);
  }
  Response call(http::verb v, const std::string& target, const std::string& body,
                std::vector<std::pair<std::string, std::string>> headers) {
    Request r{v, target, 11};
    for (const auto& [k, val] : headers) r.set(k, val);
    r.body() = body;
    r.prepare_payload();
    return route(r, *state_);
  }
  json get(const std::string& id) {
    auto r = call(http::verb::get, "/v1/jobs/" + id, "", {{"Authorization", "Bearer atok"}});
    EXPECT_EQ(r.result_int(), 200) << r.body();
    return json::parse(r.body());
  }
  Response report(const std::string& id, const json& body, const std::string& secret) {
    return call(http::verb::post, "/v1/jobs/" + id + "/reports", body.dump(), {{"X-Job-Secret", secret}});
  }
  std::string submit() {
    json b = {{"config", "fashion_mnist_small"}, {"ranks", 2}, {"overrides", {{"training.epochs", 1}}}};
    auto r = call(http::verb::post, "/v1/jobs", b.dump(), {{"Authorization", "Bearer atok"}});
    EXPECT_EQ(r.result_int(), 201) << r.body();
    return json::parse(r.body())["id"].get<std::string>();
  }
  std::string secret_of(const std::string& id) {
    for (const auto& s : fake_->started)
      if (s.job_id == id) return s.secret;
    ADD_FAILURE() << "job " << id << " was never started";
    return "";
  }
  std::string log_of(const std::string& id) {
    std::ifstream in(service_->job_dir(id) + "/worker.log");
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  // The record the worker writes: its resolved config is the job's plus --out (and --resume).
  json record_for(const std::string& id, double accuracy, const std::string& status = "succeeded") {
    json cfg = service_->get(id)->config;
    cfg["output"]["dir"] = service_->job_dir(id) + "/run";
    cfg["checkpoint"]["resume"] = "auto";
    return {{"status", status},
            {"final_test_accuracy", accuracy},
            {"world_size", 2},
            {"config", cfg},
            {"config_sha256", config::config_hash(cfg)}};
  }
  void write_result(const std::string& id, const std::string& text) {
    std::filesystem::create_directories(service_->job_dir(id) + "/run");
    std::ofstream(service_->job_dir(id) + "/run/result.json") << text;
  }

  TempDir dir_;
  std::shared_ptr<FakeState> fake_ = std::make_shared<FakeState>();
  std::unique_ptr<JobService> service_;
  std::unique_ptr<ServiceState> state_;
};

json hang_report() {
  return {{"collective", {{"seq", 7}, {"kind", "allreduce"}, {"step", 3}, {"phase", "gradient sync"}}},
          {"detected_by", 0},
          {"waited_s", 60.2},
          {"entered", {0}},
          {"missing", {1}},
          {"ranks",
           {{{"rank", 0}, {"pid", 111}, {"host", "h"}, {"process", "running"}, {"last_seen", "in #7"}},
            {{"rank", 1},
             {"pid", 4242},
             {"host", "h"},
             {"process", "stopped"},
             {"last_seen", "step 3, phase forward\nFAKE LOG LINE"}}}},
          {"message", "rank 1 never entered collective #7"}};
}

TEST_F(FaultsTest, HangReportIsStoredShownLoggedAndKeptOverARestart) {
  const std::string id = submit();
  const std::string secret = secret_of(id);
  EXPECT_TRUE(get(id)["hang"].is_null());

  // Bad reports are refused with the field named; nothing is stored.
  EXPECT_EQ(report(id, {{"type", "hang"}, {"report", hang_report()}}, "wrong").result_int(), 401);
  auto r = report(id, {{"type", "hang"}}, secret);
  EXPECT_EQ(r.result_int(), 400);
  EXPECT_EQ(json::parse(r.body())["error"]["field"], "report");
  json bad = hang_report();
  bad["missing"] = "1";
  r = report(id, {{"type", "hang"}, {"report", bad}}, secret);
  EXPECT_EQ(json::parse(r.body())["error"]["field"], "report.missing");
  bad["missing"] = {2};  // a 2-rank job has no rank 2
  EXPECT_EQ(report(id, {{"type", "hang"}, {"report", bad}}, secret).result_int(), 400);
  bad = hang_report();
  bad["message"] = std::string(9000, 'x');  // over --max-report-bytes (8 KiB here)
  EXPECT_EQ(report(id, {{"type", "hang"}, {"report", bad}}, secret).result_int(), 413);
  EXPECT_TRUE(get(id)["hang"].is_null());
  EXPECT_EQ(log_of(id).find("hang"), std::string::npos);

  r = report(id, {{"type", "hang"}, {"report", hang_report()}}, secret);
  ASSERT_EQ(r.result_int(), 202) << r.body();
  EXPECT_EQ(get(id)["hang"], hang_report());
  // One log line naming the missing rank, where it was, and no line forged by the report's strings.
  const std::string log = log_of(id);
  EXPECT_NE(log.find("hang: ranks [1] never entered collective #7 (allreduce)"), std::string::npos) << log;
  EXPECT_NE(log.find("rank 1: pid 4242 on h, process stopped"), std::string::npos) << log;
  EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), 1) << log;
  EXPECT_EQ(log.find("rank 0: pid 111"), std::string::npos) << "only missing ranks are described: " << log;

  open();  // restart: the hang survives in SQLite (the job's processes are gone, so it fails)
  json j = get(id);
  EXPECT_EQ(j["hang"]["missing"], json({1}));
  EXPECT_EQ(j["state"], "failed");

  // A job whose processes exit after a hang report fails with the culprit in its error.
  const std::string id2 = submit();
  ASSERT_EQ(report(id2, {{"type", "hang"}, {"report", hang_report()}}, secret_of(id2)).result_int(), 202);
  // Every rank entered the collective (rank 1 was stopped after posting its part): the silent rank is
  // blamed. The last report wins.
  json all_in = hang_report();
  all_in["missing"] = json::array();
  all_in["entered"] = {0, 1};
  all_in["ranks"][0]["responding"] = true;
  all_in["ranks"][1]["responding"] = false;
  ASSERT_EQ(report(id2, {{"type", "hang"}, {"report", all_in}}, secret_of(id2)).result_int(), 202);
  EXPECT_EQ(get(id2)["hang"]["missing"], json::array());
  const std::string log2 = log_of(id2);
  EXPECT_NE(
      log2.find("[coordinator] hang: collective #7 (allreduce) stuck with every rank in it; not responding: "
                "ranks [1]; detected by rank 0 after 60.2 s; rank 1: pid 4242"),
      std::string::npos)
      << log2;
  fake_->exits[service_->get(id2)->pid] = ExitInfo::exited(1, "exit status 1");
  service_->tick();
  j = get(id2);
  EXPECT_EQ(j["state"], "failed");
  EXPECT_NE(j["error"].get<std::string>().find("not responding: ranks [1]"), std::string::npos) << j.dump();
}

TEST_F(FaultsTest, RestartTakesASucceededResultFromTheJobFolder) {
  const std::string ok = submit(), failed = submit(), other = submit(), forged = submit(), junk = submit();
  write_result(ok, record_for(ok, 0.77).dump());
  write_result(failed, record_for(failed, 0.5, "failed").dump());
  json o = record_for(other, 0.6);
  o["config"]["training"]["epochs"] = 5;  // another config: not this job's record
  o["config_sha256"] = config::config_hash(o["config"]);
  write_result(other, o.dump());
  json f = record_for(forged, 0.9);
  f["config_sha256"] = std::string(64, '0');  // does not match its own config
  write_result(forged, f.dump());
  write_result(junk, "{not json");
  open();  // none of the processes lived through the restart
  json j = get(ok);
  EXPECT_EQ(j["state"], "succeeded");
  EXPECT_DOUBLE_EQ(j["test_accuracy"].get<double>(), 0.77);
  auto r = call(http::verb::get, "/v1/jobs/" + ok + "/result", "", {{"Authorization", "Bearer atok"}});
  EXPECT_EQ(r.result_int(), 200);
  for (const auto& id : {failed, other, forged, junk}) {
    j = get(id);
    EXPECT_EQ(j["state"], "failed") << id;
    EXPECT_TRUE(j["test_accuracy"].is_null()) << id;
  }
  open();  // the taken result is in the store, not re-read
  std::filesystem::remove(service_->job_dir(ok) + "/run/result.json");
  open();
  EXPECT_DOUBLE_EQ(get(ok)["test_accuracy"].get<double>(), 0.77);
}

TEST_F(FaultsTest, ProcessesEndedWithoutAResultReportTakeTheFolder) {
  // exit 0 but the report was never delivered; a re-attached job whose exit status is unknown.
  const std::string a = submit(), b = submit(), c = submit();
  write_result(a, record_for(a, 0.81).dump());
  write_result(b, record_for(b, 0.82).dump());
  fake_->exits[service_->get(a)->pid] = ExitInfo::exited(0);
  fake_->exits[service_->get(b)->pid] = ExitInfo::unknown("exit status unknown (re-attached)");
  fake_->exits[service_->get(c)->pid] = ExitInfo::unknown("exit status unknown (re-attached)");
  service_->tick();
  json ja = get(a), jb = get(b), jc = get(c);
  EXPECT_EQ(ja["state"], "succeeded");
  EXPECT_DOUBLE_EQ(ja["test_accuracy"].get<double>(), 0.81);
  EXPECT_EQ(jb["state"], "succeeded");
  EXPECT_DOUBLE_EQ(jb["test_accuracy"].get<double>(), 0.82);
  EXPECT_EQ(jc["state"], "failed");  // no record anywhere: the exit stays unexplained
}

// [Foreign text] printable_utf8 keeps valid characters whole and turns everything else into '?'.
TEST(ForeignText, PrintableUtf8) {
  EXPECT_EQ(printable_utf8("plain", 100), "plain");
  EXPECT_EQ(printable_utf8("a\nb\x7f", 100), "a?b?");          // control characters
  EXPECT_EQ(printable_utf8("\xc0\xaf", 100), "??");            // overlong '/'
  EXPECT_EQ(printable_utf8("\xed\xa0\x80", 100), "???");       // a UTF-16 surrogate
  EXPECT_EQ(printable_utf8("\xf4\x90\x80\x80", 100), "????");  // past U+10FFFF
  EXPECT_EQ(printable_utf8("ok\xc3", 100), "ok?");             // cut short
  EXPECT_EQ(printable_utf8("\xf0\x9f\x98\x80 \xc3\xa9", 100), "\xf0\x9f\x98\x80 \xc3\xa9");  // 4 and 2 bytes
  EXPECT_EQ(printable_utf8("\xc3\xa9\xc3\xa9\xc3\xa9", 5), "\xc3\xa9\xc3\xa9...");  // never half a character
  EXPECT_EQ(dump_json(json("x\xff")), "\"x\xef\xbf\xbd\"");  // U+FFFD instead of an exception
}

// [Foreign text] A job's log may hold any bytes: here a worker error quoting a path of two-byte
// characters that the 400-byte cut would split, a rank tag and a path with bytes that are not UTF-8.
// The job fails with a readable error, the next job's exit is still taken in the same tick, and the
// record is read back after a restart (all three used to throw from nlohmann's dump()).
TEST_F(FaultsTest, AnErrorLineThatIsNotUtf8FailsOnlyItsJob) {
  const std::string a = submit(), b = submit();
  std::string path = "/usr/share/datasets/x";        // odd length: the cut falls inside a character
  for (int i = 0; i < 250; ++i) path += "\xc3\xa9";  // U+00E9
  {
    std::ofstream log(service_->job_dir(a) + "/worker.log", std::ios::app | std::ios::binary);
    log << "[2026-11-27 10:00:00.000] [rank 0\xff] [error] " << path << "/\xfe: file not found\n";
  }
  fake_->exits[service_->get(a)->pid] = ExitInfo::exited(1);
  write_result(b, record_for(b, 0.8).dump());
  fake_->exits[service_->get(b)->pid] = ExitInfo::exited(0);
  service_->tick();
  const json ja = get(a);  // parse() would refuse a body that is not UTF-8
  EXPECT_EQ(ja["state"], "failed");
  const std::string err = ja["error"].get<std::string>();
  EXPECT_NE(err.find("rank 0?: /usr/share/datasets/x\xc3\xa9"), std::string::npos) << err;
  EXPECT_NE(err.find("\xc3\xa9..."), std::string::npos) << "cut at a character boundary: " << err;
  EXPECT_EQ(get(b)["state"], "succeeded");
  open();  // the coordinator restarts on the same state folder
  EXPECT_EQ(get(a)["error"], ja["error"]);
}

}  // namespace
}  // namespace rx::coord

namespace rx::coord {
namespace {

class RestartsTest : public FaultsTest {
 protected:
  void SetUp() override {}  // each test opens with its own backoff
  void open_with_backoff(int64_t ms) {
    backoff_ms_ = ms;
    reopen();
  }
  void reopen() {
    state_.reset();
    service_.reset();
    ServiceOptions o = test_service_options(dir_.path(), 10);
    o.restart_backoff_ms = backoff_ms_;
    service_ = std::make_unique<JobService>(o, std::make_unique<FakeLauncher>(fake_),
                                            Tokens::from_pairs({{"alice", "atok"}}));
    service_->recover();
    state_ = std::make_unique<ServiceState>(*service_);
  }
  Response submit_raw(const json& extra) {
    json b = {{"config", "fashion_mnist_small"}, {"ranks", 2}, {"overrides", {{"training.epochs", 1}}}};
    b.update(extra);
    return call(http::verb::post, "/v1/jobs", b.dump(), {{"Authorization", "Bearer atok"}});
  }
  std::string submit_restarts(int n) {
    auto r = submit_raw({{"max_restarts", n}});
    EXPECT_EQ(r.result_int(), 201) << r.body();
    return json::parse(r.body())["id"].get<std::string>();
  }
  void exit_with(const std::string& id, std::optional<int> code, const std::string& reason) {
    fake_->exits[service_->get(id)->pid] = code ? ExitInfo::exited(*code, reason) : ExitInfo::failed(reason);
  }
  const LaunchSpec& last_start(const std::string& id) {
    const LaunchSpec* found = nullptr;
    for (const auto& s : fake_->started)
      if (s.job_id == id) found = &s;
    EXPECT_NE(found, nullptr);
    return *found;
  }
  int starts(const std::string& id) {
    return static_cast<int>(std::count_if(fake_->started.begin(), fake_->started.end(),
                                          [&](const LaunchSpec& s) { return s.job_id == id; }));
  }
  int64_t backoff_ms_ = 0;
};

TEST_F(RestartsTest, BadMaxRestartsIsRefusedNamingTheField) {
  open_with_backoff(0);
  for (const json& v : {json(-1), json("1"), json(1.5), json(JobService::kMaxRestarts + 1)}) {
    auto r = submit_raw({{"max_restarts", v}});
    EXPECT_EQ(r.result_int(), 400) << v;
    EXPECT_EQ(json::parse(r.body())["error"]["field"], "max_restarts") << v;
  }
  const std::string id = submit_restarts(0);  // default behaviour: a failure is final
  EXPECT_EQ(get(id)["max_restarts"], 0);
  exit_with(id, 1, "exit status 1");
  service_->tick();
  json j = get(id);
  EXPECT_EQ(j["state"], "failed");
  EXPECT_EQ(starts(id), 1);
  ASSERT_EQ(j["attempts"].size(), 1u);
  EXPECT_EQ(j["attempts"][0]["cause"], "exit status 1");
  EXPECT_EQ(j["attempts"][0]["exit_code"], 1);
}

TEST_F(RestartsTest, FailedProcessesRelaunchWithResumeUpToMaxRestarts) {
  open_with_backoff(0);
  const std::string id = submit_restarts(1);
  EXPECT_FALSE(last_start(id).resume);
  const std::string first_secret = last_start(id).secret;
  std::filesystem::create_directories(service_->job_dir(id) + "/run/checkpoints");
  // Pairs as the worker's CheckpointStore writes them; ckpt-100's .pt does not match its checksum and
  // ckpt-200 has no .json (an interrupted save), so the newest verified one is ckpt-12.
  const std::string ck = service_->job_dir(id) + "/run/checkpoints/ckpt-";
  for (int step : {4, 12, 100}) {
    const std::string pt = "tensors of step " + std::to_string(step);
    std::ofstream(ck + std::to_string(step) + ".pt") << (step == 100 ? pt + " corrupted" : pt);
    std::ofstream(ck + std::to_string(step) + ".json") << json{{"pt_sha256", sha256_hex(pt)}}.dump();
  }
  std::ofstream(ck + "200.pt") << "x";
  ASSERT_EQ(report(id, {{"type", "hang"}, {"report", hang_report()}}, first_secret).result_int(), 202);
  exit_with(id, 1, "exit status 1");
  service_->tick();  // reaps the failure; the backoff (0 here) is due at once, so it relaunches
  json j = get(id);
  EXPECT_EQ(j["state"], "running") << j.dump();
  EXPECT_EQ(starts(id), 2);
  EXPECT_TRUE(last_start(id).resume);
  EXPECT_EQ(j["restarts"], 1);
  ASSERT_EQ(j["attempts"].size(), 2u);
  EXPECT_NE(j["attempts"][0]["cause"].get<std::string>().find("hang: ranks [1]"), std::string::npos)
      << j.dump();
  EXPECT_TRUE(j["attempts"][0]["ended_at"].is_string());
  EXPECT_EQ(j["attempts"][1]["resumed_from"], "checkpoints/ckpt-12.pt");
  EXPECT_TRUE(j["attempts"][1]["ended_at"].is_null());
  EXPECT_TRUE(j["hang"].is_null()) << "the hang belongs to attempt 0";
  EXPECT_TRUE(j["error"].is_null()) << j["error"];
  // The new attempt has a new secret; the old one no longer reports.
  EXPECT_EQ(report(id, {{"type", "progress"}}, first_secret).result_int(), 401);
  EXPECT_EQ(report(id, {{"type", "progress"}}, last_start(id).secret).result_int(), 202);

  exit_with(id, 137, "rank 1 killed");
  service_->tick();
  j = get(id);
  EXPECT_EQ(j["state"], "failed");  // restarts used up
  EXPECT_EQ(starts(id), 2);
  EXPECT_EQ(j["error"], "rank 1 killed");
  EXPECT_EQ(j["attempts"][1]["cause"], "rank 1 killed");
}

TEST_F(RestartsTest, ARestartThatSucceedsIsSucceeded) {
  open_with_backoff(0);
  const std::string id = submit_restarts(3);
  exit_with(id, 1, "exit status 1");
  service_->tick();
  exit_with(id, 0, "");
  service_->tick();
  json j = get(id);
  EXPECT_EQ(j["state"], "succeeded");
  EXPECT_EQ(j["restarts"], 1);
  EXPECT_EQ(j["attempts"][1]["resumed_from"], "none (starts over)");
  EXPECT_EQ(j["attempts"][1]["cause"], "succeeded");
}

TEST_F(RestartsTest, RestartingJobsWaitTheirBackoffSurviveARestartAndCancelAtOnce) {
  open_with_backoff(3600 * 1000);  // never due within the test
  const std::string a = submit_restarts(2), b = submit_restarts(2);
  exit_with(a, 1, "exit status 1");
  exit_with(b, 1, "exit status 1");
  service_->tick();
  EXPECT_EQ(get(a)["state"], "restarting");
  EXPECT_NE(get(a)["error"].get<std::string>().find("restarting after: exit status 1"), std::string::npos);
  EXPECT_EQ(starts(a), 1);
  // Restarting jobs keep their slots: 10 slots, 2 x 2 held, so three more 2-rank jobs run and a fourth
  // queues.
  std::vector<std::string> more;
  for (int i = 0; i < 4; ++i) more.push_back(submit_restarts(0));
  EXPECT_EQ(get(more[2])["state"], "running");
  EXPECT_EQ(get(more[3])["state"], "queued");

  reopen();  // the restart is in SQLite
  EXPECT_EQ(get(a)["state"], "restarting");
  auto r = call(http::verb::post, "/v1/jobs/" + a + "/cancel", "{}", {{"Authorization", "Bearer atok"}});
  EXPECT_EQ(r.result_int(), 202) << r.body();
  EXPECT_EQ(get(a)["state"], "cancelled");  // no process to wait for

  // The due time is stored, not recomputed: a coordinator restart neither hurries nor delays it.
  const int64_t due = service_->get(b)->restart_due_ms;
  backoff_ms_ = 0;
  reopen();
  service_->tick();
  EXPECT_EQ(get(b)["state"], "restarting");
  EXPECT_EQ(service_->get(b)->restart_due_ms, due);
  EXPECT_EQ(starts(b), 1);
  EXPECT_EQ(get(a)["state"], "cancelled");
  EXPECT_EQ(starts(a), 1);
}

}  // namespace
}  // namespace rx::coord
