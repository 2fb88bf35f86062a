// The coordinator's routing function, scheduler and store, without sockets or processes: a
// FakeLauncher stands in for mpirun and the tests drive JobService::tick() by hand.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "common/data/shard_plan.h"
#include "coordinator/http/json_guard.h"
#include "coordinator/http/router.h"
#include "coordinator/jobs/job_store.h"
#include "coordinator/jobs/scheduler.h"
#include "coordinator/util/util.h"
#include "tests/coordinator/test_support.h"

namespace rx::coord {
namespace {

namespace http = boost::beast::http;
namespace fs = std::filesystem;
using nlohmann::json;

Request make_req(http::verb v, const std::string& target, const std::string& body = "",
                 const std::vector<std::pair<std::string, std::string>>& headers = {}) {
  Request r{v, target, 11};
  for (const auto& [k, val] : headers) r.set(k, val);
  r.body() = body;
  r.prepare_payload();
  return r;
}

const json kTiny = {{"training.epochs", 1}, {"data.max_train_samples", 512}};

class RoutesTest : public ::testing::Test {
 protected:
  void SetUp() override { open(Tokens::from_pairs({{"alice", "atok"}, {"bob", "btok"}})); }

  void open(Tokens tokens, int slots = 4) {
    state_.reset();
    service_.reset();
    ServiceOptions o = test_service_options(dir_.path(), slots);
    // Reads need a token: the fixture's GETs go out as an admin unless a test names a token.
    if (tokens.enabled()) tokens.add("root", "rtok", true);
    service_ = std::make_unique<JobService>(o, std::make_unique<FakeLauncher>(fake_), std::move(tokens));
    service_->recover();
    state_ = std::make_unique<ServiceState>(*service_);
  }

  Response call(http::verb v, const std::string& target, const std::string& body = "",
                std::vector<std::pair<std::string, std::string>> headers = {}) {
    if (v == http::verb::get && headers.empty()) headers.emplace_back("Authorization", "Bearer rtok");
    return route(make_req(v, target, body, headers), *state_);
  }
  Response post_as(const std::string& token, const std::string& target, const json& body,
                   std::vector<std::pair<std::string, std::string>> headers = {}) {
    headers.emplace_back("Authorization", "Bearer " + token);
    return call(http::verb::post, target, body.dump(), headers);
  }
  static json body(const Response& r) { return json::parse(r.body()); }
  static std::string field(const Response& r) {
    json j = body(r);
    return j["error"]["field"].is_string() ? j["error"]["field"].get<std::string>() : "";
  }
  std::string submit(const std::string& token = "atok", int ranks = 2) {
    auto r = post_as(token, "/v1/jobs",
                     {{"config", "fashion_mnist_small"}, {"ranks", ranks}, {"overrides", kTiny}});
    EXPECT_EQ(r.result_int(), 201) << r.body();
    return body(r)["id"].get<std::string>();
  }
  std::string secret_of(const std::string& id) {
    for (const auto& s : fake_->started)
      if (s.job_id == id) return s.secret;
    ADD_FAILURE() << "job " << id << " was never started";
    return "";
  }

  TempDir dir_;
  std::shared_ptr<FakeState> fake_ = std::make_shared<FakeState>();
  std::unique_ptr<JobService> service_;
  std::unique_ptr<ServiceState> state_;
};

TEST_F(RoutesTest, SubmitBadInputMatrix) {
  struct Case {
    std::string name;
    std::string body;
    int status;
    std::string field;
  };
  const std::string deep = std::string(100, '[') + std::string(100, ']');
  const std::vector<Case> cases = {
      {"malformed", "{\"ranks\": 2,", 400, ""},
      {"not an object", "[1,2]", 400, ""},
      {"ranks wrong type", R"({"config":"fashion_mnist_small","ranks":"2"})", 400, "ranks"},
      {"ranks missing", R"({"config":"fashion_mnist_small"})", 400, "ranks"},
      {"ranks zero", R"({"config":"fashion_mnist_small","ranks":0})", 400, "ranks"},
      {"ranks over capacity", R"({"config":"fashion_mnist_small","ranks":5})", 400, "ranks"},
      {"unknown field", R"({"config":"fashion_mnist_small","ranks":1,"bogus":1})", 400, "bogus"},
      {"config missing", R"({"ranks":1})", 400, "config"},
      {"config wrong type", R"({"ranks":1,"config":42})", 400, "config"},
      {"unknown preset", R"({"ranks":1,"config":"no_such_preset"})", 400, "config"},
      {"preset path traversal", R"({"ranks":1,"config":"../etc/passwd"})", 400, "config"},
      {"name wrong type", R"({"ranks":1,"config":"fashion_mnist_small","name":7})", 400, "name"},
      {"overrides wrong type", R"({"ranks":1,"config":"fashion_mnist_small","overrides":[1]})", 400,
       "overrides"},
      {"bad override value",
       R"({"ranks":1,"config":"fashion_mnist_small","overrides":{"training.epochs":0}})", 400,
       "training.epochs"},
      {"override wrong type",
       R"({"ranks":1,"config":"fashion_mnist_small","overrides":{"training.epochs":"x"}})", 400,
       "training.epochs"},
      {"unknown override key",
       R"({"ranks":1,"config":"fashion_mnist_small","overrides":{"training.nope":1}})", 400, "training.nope"},
      {"too deep", deep, 400, ""},
  };
  for (const auto& c : cases) {
    auto r = call(http::verb::post, "/v1/jobs", c.body, {{"Authorization", "Bearer atok"}});
    EXPECT_EQ(r.result_int(), c.status) << c.name << ": " << r.body();
    json j = json::parse(r.body(), nullptr, false);
    ASSERT_TRUE(j.is_object() && j.contains("error")) << c.name << ": " << r.body();
    EXPECT_TRUE(j["error"]["code"].is_string() && j["error"]["message"].is_string()) << c.name;
    if (!c.field.empty()) {
      EXPECT_EQ(field(r), c.field) << c.name << ": " << r.body();
    }
  }
  EXPECT_EQ(
      body(call(http::verb::post, "/v1/jobs", deep, {{"Authorization", "Bearer atok"}}))["error"]["code"],
      "too_deep");
  // Nothing above created a job.
  EXPECT_EQ(body(call(http::verb::get, "/v1/jobs"))["total"], 0);
}

TEST_F(RoutesTest, OversizedBodyIs413) {
  std::string big = "{\"name\":\"" + std::string(kMaxBodyBytes + 10, 'x') + "\"}";
  auto r = call(http::verb::post, "/v1/jobs", big, {{"Authorization", "Bearer atok"}});
  EXPECT_EQ(r.result_int(), 413);
}

TEST_F(RoutesTest, AuthRequiredForMutations) {
  const json ok = {{"config", "fashion_mnist_small"}, {"ranks", 1}};
  EXPECT_EQ(call(http::verb::post, "/v1/jobs", ok.dump()).result_int(), 401);
  EXPECT_EQ(post_as("wrong", "/v1/jobs", ok).result_int(), 401);
  EXPECT_EQ(call(http::verb::post, "/v1/jobs", ok.dump(), {{"Authorization", "Basic atok"}}).result_int(),
            401);
  EXPECT_EQ(call(http::verb::post, "/v1/jobs", ok.dump()).at(http::field::www_authenticate), "Bearer");
  const std::string id = submit("atok");
  EXPECT_EQ(body(call(http::verb::get, "/v1/jobs/" + id))["owner"], "alice");
  EXPECT_EQ(call(http::verb::post, "/v1/jobs/" + id + "/cancel", "{}").result_int(), 401);
  EXPECT_EQ(post_as("btok", "/v1/jobs/" + id + "/cancel", json::object()).result_int(), 404);
  EXPECT_EQ(body(call(http::verb::get, "/v1/jobs/" + id))["state"], "running");
  auto r = post_as("atok", "/v1/jobs/" + id + "/cancel", json::object());
  EXPECT_EQ(r.result_int(), 202) << r.body();
  ASSERT_EQ(fake_->cancels.size(), 1u);
  EXPECT_FALSE(fake_->cancels[0].second);  // SIGTERM first
  // Once the launcher reports the exit, the job is cancelled (not failed).
  fake_->exits[fake_->cancels[0].first] = ExitInfo::exited(143, "mpirun exited with status 143");
  service_->tick();
  EXPECT_EQ(body(call(http::verb::get, "/v1/jobs/" + id))["state"], "cancelled");
  EXPECT_EQ(post_as("atok", "/v1/jobs/" + id + "/cancel", json::object()).result_int(), 409);
}

TEST_F(RoutesTest, NotFoundAndMethodNotAllowed) {
  EXPECT_EQ(call(http::verb::get, "/v1/jobs/nope").result_int(), 404);
  EXPECT_EQ(call(http::verb::get, "/v1/jobs/nope/metrics").result_int(), 404);
  EXPECT_EQ(call(http::verb::get, "/v1/jobs/nope/result").result_int(), 404);
  EXPECT_EQ(call(http::verb::get, "/v1/jobs/nope/logs").result_int(), 404);
  EXPECT_EQ(post_as("atok", "/v1/jobs/nope/cancel", json::object()).result_int(), 404);
  EXPECT_EQ(call(http::verb::get, "/nope").result_int(), 404);
  EXPECT_EQ(call(http::verb::get, "/v1/jobs/x/y/z/w").result_int(), 404);
  auto bad_utf8 = call(http::verb::get, "/v1/\xff\xfe?state=\xff");  // messages quote the target
  EXPECT_EQ(bad_utf8.result_int(), 404);
  EXPECT_TRUE(json::parse(bad_utf8.body(), nullptr, false).is_object()) << bad_utf8.body();
  EXPECT_EQ(call(http::verb::get, "/v1/jobs?state=\xff").result_int(), 400);
  auto r = call(http::verb::delete_, "/v1/jobs");
  EXPECT_EQ(r.result_int(), 405);
  EXPECT_EQ(r.at(http::field::allow), "GET, POST");
  r = call(http::verb::get, "/v1/jobs/abc/cancel");
  EXPECT_EQ(r.result_int(), 405);
  EXPECT_EQ(r.at(http::field::allow), "POST");
  EXPECT_EQ(call(http::verb::put, "/healthz").result_int(), 405);
  EXPECT_EQ(call(http::verb::get, "/v1/jobs?limit=0").result_int(), 400);
  EXPECT_EQ(call(http::verb::get, "/v1/jobs?limit=abc").result_int(), 400);
  EXPECT_EQ(call(http::verb::get, "/v1/jobs?state=bogus").result_int(), 400);
}

// [Cross-site] What a page in a browser on the same machine could send: another Origin, a form's
// Content-Type, and (without tokens, on loopback) a rebound Host. Each is refused before any route;
// the dashboard's own requests (same Origin and Host, JSON) and clients without an Origin pass.
TEST_F(RoutesTest, CrossSiteRequestsAreRefused) {
  const json job = {{"config", "fashion_mnist_small"}, {"ranks", 1}, {"overrides", kTiny}};
  const std::string auth = "Bearer atok";
  auto status = [&](std::vector<std::pair<std::string, std::string>> headers, http::verb v = http::verb::post,
                    const std::string& target = "/v1/jobs") {
    headers.emplace_back("Authorization", v == http::verb::post ? auth : "Bearer rtok");
    return call(v, target, v == http::verb::post ? job.dump() : "", headers).result_int();
  };
  EXPECT_EQ(status({{"Host", "127.0.0.1:8080"}, {"Origin", "http://attacker.example"}}), 403);
  EXPECT_EQ(status({{"Host", "127.0.0.1:8080"}, {"Origin", "null"}}), 403);
  EXPECT_EQ(status({{"Host", "127.0.0.1:8080"}, {"Origin", "http://attacker.example"}}, http::verb::get,
                   "/v1/jobs"),
            403);
  EXPECT_EQ(status({{"Content-Type", "text/plain;charset=UTF-8"}}), 415);
  EXPECT_EQ(status({{"Content-Type", "application/x-www-form-urlencoded"}}), 415);
  const auto refused = call(http::verb::post, "/v1/jobs", job.dump(),
                            {{"Authorization", auth}, {"Origin", "http://attacker.example"}, {"Host", "x"}});
  EXPECT_EQ(field(refused), "Origin");
  EXPECT_EQ(body(call(http::verb::get, "/v1/jobs"))["total"], 0) << "a refused request submitted a job";
  // The dashboard: same origin, JSON. A client without an Origin (curl, the CLI, the workers).
  EXPECT_EQ(status({{"Host", "127.0.0.1:8080"},
                    {"Origin", "http://127.0.0.1:8080"},
                    {"Content-Type", "application/json"}}),
            201);
  EXPECT_EQ(status({{"Host", "LOCALHOST:1"}, {"Origin", "http://localhost:1"}}), 201);
  EXPECT_EQ(status({}), 201);
  // Without tokens on loopback (serve sets loopback_host_only): only loopback Host names.
  state_->loopback_host_only = true;
  EXPECT_EQ(status({{"Host", "rebind.attacker.example:8080"}}, http::verb::get, "/v1/jobs"), 403);
  EXPECT_EQ(status({{"Host", "rebind.attacker.example"}}), 403);
  for (const std::string host : {"127.0.0.1:9", "127.5.6.7", "localhost:80", "[::1]:8080", "[::1]"})
    EXPECT_EQ(status({{"Host", host}}, http::verb::get, "/v1/jobs"), 200) << host;
}

TEST_F(RoutesTest, IdempotencyKey) {
  const json b = {{"config", "fashion_mnist_small"}, {"ranks", 1}, {"overrides", kTiny}};
  auto r1 = post_as("atok", "/v1/jobs", b, {{"Idempotency-Key", "k1"}});
  auto r2 = post_as("atok", "/v1/jobs", b, {{"Idempotency-Key", "k1"}});
  ASSERT_EQ(r1.result_int(), 201) << r1.body();
  EXPECT_EQ(r2.result_int(), 200);
  EXPECT_EQ(body(r1)["id"], body(r2)["id"]);
  auto r3 = post_as("btok", "/v1/jobs", b, {{"Idempotency-Key", "k1"}});  // other owner: other job
  EXPECT_EQ(r3.result_int(), 201);
  EXPECT_NE(body(r3)["id"], body(r1)["id"]);
  auto r4 = post_as("atok", "/v1/jobs", b);  // no key: a new job
  EXPECT_NE(body(r4)["id"], body(r1)["id"]);
  EXPECT_EQ(body(call(http::verb::get, "/v1/jobs"))["total"], 3);
}

TEST_F(RoutesTest, ReportsNeedTheJobSecret) {
  const std::string id = submit();
  const std::string secret = secret_of(id);
  const json progress = {{"type", "progress"},
                         {"epoch", 1},
                         {"epochs", 3},
                         {"step", 40},
                         {"steps_per_epoch", 188},
                         {"loss", 0.61},
                         {"test_accuracy", nullptr},
                         {"ranks",
                          {{{"rank", 0}, {"images_per_sec", 210.5}, {"peak_memory_bytes", 123}},
                           {{"rank", 1}, {"images_per_sec", 200.0}, {"peak_memory_bytes", 456}}}}};
  const std::string target = "/v1/jobs/" + id + "/reports";
  const std::string before = call(http::verb::get, "/v1/jobs/" + id).body();
  EXPECT_EQ(call(http::verb::post, target, progress.dump()).result_int(), 401);
  EXPECT_EQ(call(http::verb::post, target, progress.dump(), {{"X-Job-Secret", "wrong"}}).result_int(), 401);
  EXPECT_EQ(call(http::verb::post, target, progress.dump(), {{"X-Job-Secret", secret + "x"}}).result_int(),
            401);
  // A user token is not a job secret.
  EXPECT_EQ(call(http::verb::post, target, progress.dump(), {{"Authorization", "Bearer atok"}}).result_int(),
            401);
  EXPECT_EQ(call(http::verb::post, target, "{bad", {{"X-Job-Secret", "wrong"}}).result_int(), 401);
  // A job that does not exist answers as a wrong secret does: no oracle for job ids.
  const auto missing =
      call(http::verb::post, "/v1/jobs/j000000000000/reports", progress.dump(), {{"X-Job-Secret", "wrong"}});
  const auto wrong = call(http::verb::post, target, progress.dump(), {{"X-Job-Secret", "wrong"}});
  EXPECT_EQ(missing.result_int(), 401);
  EXPECT_EQ(missing.body(), wrong.body());
  EXPECT_EQ(call(http::verb::get, "/v1/jobs/j000000000000/shards/0?epoch=0", "", {{"X-Job-Secret", "wrong"}})
                .result_int(),
            401);
  EXPECT_EQ(call(http::verb::get, "/v1/jobs/" + id).body(), before);
  EXPECT_EQ(body(call(http::verb::get, "/v1/jobs/" + id + "/metrics"))["points"].size(), 0u);

  EXPECT_EQ(call(http::verb::post, target, "{bad", {{"X-Job-Secret", secret}}).result_int(), 400);
  EXPECT_EQ(call(http::verb::post, target, R"({"type":"nope"})", {{"X-Job-Secret", secret}}).result_int(),
            400);
  auto r = call(http::verb::post, target, progress.dump(), {{"X-Job-Secret", secret}});
  EXPECT_EQ(r.result_int(), 202) << r.body();
  json j = body(call(http::verb::get, "/v1/jobs/" + id));
  EXPECT_EQ(j["progress"]["epoch"], 1);
  EXPECT_EQ(j["progress"]["steps_per_epoch"], 188);
  EXPECT_DOUBLE_EQ(j["loss"].get<double>(), 0.61);
  ASSERT_EQ(j["ranks"].size(), 2u);
  EXPECT_EQ(j["ranks"][1]["peak_memory_bytes"], 456);
  json m = body(call(http::verb::get, "/v1/jobs/" + id + "/metrics"));
  ASSERT_EQ(m["points"].size(), 1u);
  EXPECT_EQ(m["points"][0]["step"], 40);
  EXPECT_TRUE(m["points"][0]["received_at"].is_string());

  EXPECT_EQ(call(http::verb::get, "/v1/jobs/" + id + "/result").result_int(), 404);
  const json record = {{"final_test_accuracy", 0.85},
                       {"best_test_accuracy", 0.86},
                       {"world_size", 2},
                       {"ranks", {{{"rank", 0}, {"images_per_sec", 300.0}, {"peak_memory_bytes", 1}}}}};
  r = call(http::verb::post, target, json{{"type", "result"}, {"record", record}}.dump(),
           {{"X-Job-Secret", secret}});
  EXPECT_EQ(r.result_int(), 202);
  r = call(http::verb::get, "/v1/jobs/" + id + "/result");
  EXPECT_EQ(r.result_int(), 200);
  EXPECT_EQ(body(r), record);
  EXPECT_DOUBLE_EQ(body(call(http::verb::get, "/v1/jobs/" + id))["test_accuracy"].get<double>(), 0.85);
}

TEST_F(RoutesTest, ListHealthAndPrometheus) {
  const std::string a = submit("atok", 2), b = submit("atok", 2),
                    c = submit("btok", 2);  // c queued (4 slots)
  json l = body(call(http::verb::get, "/v1/jobs"));
  ASSERT_EQ(l["jobs"].size(), 3u);
  EXPECT_EQ(l["jobs"][0]["id"], c);  // newest first
  EXPECT_EQ(l["jobs"][2]["id"], a);
  l = body(call(http::verb::get, "/v1/jobs?state=queued"));
  ASSERT_EQ(l["jobs"].size(), 1u);
  EXPECT_EQ(l["jobs"][0]["id"], c);
  l = body(call(http::verb::get, "/v1/jobs?limit=1&offset=1"));
  ASSERT_EQ(l["jobs"].size(), 1u);
  EXPECT_EQ(l["jobs"][0]["id"], b);
  EXPECT_EQ(l["next_offset"], 2);
  json j = body(call(http::verb::get, "/v1/jobs/" + a));
  for (const char* k :
       {"id", "name", "state", "world_size", "created_at", "started_at", "finished_at", "progress", "loss",
        "test_accuracy", "ranks", "exit_code", "error", "owner", "slurm_job_id"})
    EXPECT_TRUE(j.contains(k)) << k;
  EXPECT_TRUE(j["started_at"].is_string());
  EXPECT_TRUE(j["finished_at"].is_null());
  EXPECT_EQ(call(http::verb::get, "/healthz").result_int(), 200);
  auto m = call(http::verb::get, "/metrics");
  EXPECT_EQ(m.result_int(), 200);
  EXPECT_NE(m.body().find("rx_jobs{state=\"queued\"} 1"), std::string::npos) << m.body();
  EXPECT_NE(m.body().find("rx_slots{state=\"busy\"} 4"), std::string::npos) << m.body();
  EXPECT_NE(m.body().find("rx_http_requests_total{route=\"GET /v1/jobs\",code=\"2xx\"}"), std::string::npos);
  EXPECT_NE(m.body().find("rx_http_request_duration_seconds_bucket"), std::string::npos);
  // A running job's own series: for its owner and admins, not for another user.
  const std::string series_a = "rx_job_images_per_second{job=\"" + a + "\"}";
  EXPECT_NE(m.body().find(series_a), std::string::npos) << m.body();  // root, an admin
  m = call(http::verb::get, "/metrics", "", {{"Authorization", "Bearer atok"}});
  EXPECT_NE(m.body().find(series_a), std::string::npos) << m.body();
  m = call(http::verb::get, "/metrics", "", {{"Authorization", "Bearer btok"}});
  EXPECT_EQ(m.result_int(), 200);
  EXPECT_EQ(m.body().find(series_a), std::string::npos) << m.body();
  EXPECT_EQ(m.body().find("rx_job_images_per_second{"), std::string::npos) << m.body();
  EXPECT_NE(m.body().find("rx_slots{state=\"busy\"} 4"), std::string::npos) << m.body();
}

TEST_F(RoutesTest, ShardsMatchTheSharedPlan) {
  if (!fs::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"))
    GTEST_SKIP() << "SKIPPED: /usr/share/datasets/fashion-mnist is not installed (launch/setup.sh)";
  const std::string id = submit("atok", 2);
  auto r = call(http::verb::get, "/v1/jobs/" + id + "/shards/1?epoch=3");
  ASSERT_EQ(r.result_int(), 200) << r.body();
  json j = body(r);
  data::ShardSpec spec;
  spec.dataset_size = 512;  // the job's own: the IDX header capped by data.max_train_samples
  spec.world_size = 2;
  spec.rank = 1;
  spec.epoch = 3;
  spec.seed = 1;
  spec.mode = data::ShardMode::kGlobal;
  EXPECT_EQ(j["indices"].get<std::vector<int64_t>>(), data::shard_indices(spec));
  EXPECT_EQ(j["sha256"], sha256_hex(j["indices"].dump()));
  EXPECT_EQ(j["world_size"], 2);
  EXPECT_EQ(j["mode"], "global");
  EXPECT_EQ(call(http::verb::get, "/v1/jobs/" + id + "/shards/2?epoch=0").result_int(), 404);
  EXPECT_EQ(call(http::verb::get, "/v1/jobs/" + id + "/shards/0").result_int(), 400);
  EXPECT_EQ(call(http::verb::get, "/v1/jobs/" + id + "/shards/x?epoch=0").result_int(), 400);
  // Without ?dataset_size the coordinator reads the IDX header (capped by data.max_train_samples).
  const std::string images = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz";
  if (!fs::exists(images))
    GTEST_SKIP() << "the dataset-size part needs Debian's dataset-fashion-mnist (" << images
                 << " is missing; launch/setup.sh installs it); the parts above ran";
  r = call(http::verb::get, "/v1/jobs/" + id + "/shards/0?epoch=0");
  ASSERT_EQ(r.result_int(), 200) << r.body();
  EXPECT_EQ(body(r)["dataset_size"], 512);
  EXPECT_EQ(body(r)["indices"].size(), 256u);
}

TEST_F(RoutesTest, LogsTail) {
  const std::string id = submit();
  {
    std::ofstream log(service_->job_dir(id) + "/worker.log");
    for (int i = 0; i < 20000; ++i) log << "line " << i << " " << std::string(20, 'x') << "\n";
    log << "last without newline";
  }
  auto r = call(http::verb::get, "/v1/jobs/" + id + "/logs?tail=3");
  ASSERT_EQ(r.result_int(), 200);
  EXPECT_EQ(r.body(),
            "line 19998 xxxxxxxxxxxxxxxxxxxx\nline 19999 xxxxxxxxxxxxxxxxxxxx\nlast without newline\n");
  r = call(http::verb::get, "/v1/jobs/" + id + "/logs?tail=100000");
  EXPECT_EQ(std::count(r.body().begin(), r.body().end(), '\n'), 20001);
  EXPECT_EQ(r.body().substr(0, 7), "line 0 ");
  EXPECT_EQ(call(http::verb::get, "/v1/jobs/" + id + "/logs?tail=0").result_int(), 400);
}

TEST(Scheduler, StrictFifoOverSlots) {
  EXPECT_EQ(pick_fifo({{"a", 2}, {"b", 1}, {"c", 1}}, 4), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(pick_fifo({{"a", 2}, {"b", 2}, {"c", 1}}, 3), (std::vector<std::string>{"a"}));  // b blocks c
  EXPECT_EQ(pick_fifo({{"a", 3}, {"b", 1}}, 2), (std::vector<std::string>{}));
  EXPECT_EQ(pick_fifo({}, 2), (std::vector<std::string>{}));
  EXPECT_TRUE(fits_capacity(4, 4));
  EXPECT_FALSE(fits_capacity(5, 4));
  EXPECT_FALSE(fits_capacity(0, 4));
}

TEST_F(RoutesTest, ServiceRunsJobsFifoAsSlotsFree) {
  open(Tokens(), 3);  // auth off: owner "anonymous"
  auto sub = [&](int ranks) {
    auto r = call(http::verb::post, "/v1/jobs",
                  json{{"config", "fashion_mnist_small"}, {"ranks", ranks}, {"overrides", kTiny}}.dump());
    EXPECT_EQ(r.result_int(), 201) << r.body();
    return body(r)["id"].get<std::string>();
  };
  auto state = [&](const std::string& id) { return body(call(http::verb::get, "/v1/jobs/" + id))["state"]; };
  const std::string a = sub(2), b = sub(2), c = sub(1);
  EXPECT_EQ(state(a), "running");
  EXPECT_EQ(state(b), "queued");
  EXPECT_EQ(state(c), "queued");  // would fit, but FIFO: b goes first
  service_->tick();
  EXPECT_EQ(state(c), "queued");
  ASSERT_EQ(fake_->started.at(0).job_id, a);
  fake_->exits[1000] = ExitInfo::exited(0);
  service_->tick();
  EXPECT_EQ(state(a), "succeeded");
  EXPECT_EQ(state(b), "running");
  EXPECT_EQ(state(c), "running");
  EXPECT_EQ(body(call(http::verb::get, "/v1/jobs/" + a))["exit_code"], 0);
  fake_->exits[1001] = ExitInfo::exited(1, "mpirun exited with status 1");
  service_->tick();
  EXPECT_EQ(state(b), "failed");
  EXPECT_EQ(body(call(http::verb::get, "/v1/jobs/" + b))["error"], "mpirun exited with status 1");
  // The job dir holds the resolved config the worker will read.
  json cfg = json::parse(std::ifstream(service_->job_dir(a) + "/config.json"));
  EXPECT_EQ(cfg["training"]["epochs"], 1);
  EXPECT_EQ(fake_->started.at(0).world_size, 2);
  // Queued jobs cancel at once.
  const std::string d = sub(3);
  EXPECT_EQ(state(d), "queued");
  EXPECT_EQ(call(http::verb::post, "/v1/jobs/" + d + "/cancel", "{}").result_int(), 202);
  EXPECT_EQ(state(d), "cancelled");
}

TEST_F(RoutesTest, RestartKeepsJobsReportsAndReattaches) {
  const std::string a = submit("atok", 2), b = submit("atok", 2);
  const json queued = {{"config", "fashion_mnist_small"}, {"ranks", 2}, {"overrides", kTiny}};
  auto rq = post_as("atok", "/v1/jobs", queued, {{"Idempotency-Key", "restart-key"}});
  ASSERT_EQ(rq.result_int(), 201) << rq.body();
  const std::string q = body(rq)["id"].get<std::string>();
  const std::string secret = secret_of(a);
  const json progress = {{"type", "progress"},   {"epoch", 2},  {"epochs", 3},           {"step", 7},
                         {"steps_per_epoch", 9}, {"loss", 0.3}, {"ranks", json::array()}};
  ASSERT_EQ(call(http::verb::post, "/v1/jobs/" + a + "/reports", progress.dump(), {{"X-Job-Secret", secret}})
                .result_int(),
            202);
  const std::string before_a = call(http::verb::get, "/v1/jobs/" + a).body();
  const auto pid_a = service_->get(a)->pid;
  fake_->alive_on_reattach = {pid_a};  // a still runs, b died with the coordinator
  open(Tokens::from_pairs({{"alice", "atok"}, {"bob", "btok"}}));
  EXPECT_EQ(call(http::verb::get, "/v1/jobs/" + a).body(), before_a);
  json jb = body(call(http::verb::get, "/v1/jobs/" + b));
  EXPECT_EQ(jb["state"], "failed");
  EXPECT_NE(jb["error"].get<std::string>().find("coordinator restarted"), std::string::npos);
  EXPECT_EQ(body(call(http::verb::get, "/v1/jobs/" + q))["state"], "queued");
  EXPECT_EQ(body(call(http::verb::get, "/v1/jobs/" + a + "/metrics"))["points"].size(), 1u);
  // The re-attached job still accepts reports with its secret (hash survived the restart).
  EXPECT_EQ(call(http::verb::post, "/v1/jobs/" + a + "/reports", progress.dump(), {{"X-Job-Secret", secret}})
                .result_int(),
            202);
  // Idempotency keys survive too: the retried submission returns q (200), no new job; the key is
  // still the owner's alone.
  auto retry = post_as("atok", "/v1/jobs", queued, {{"Idempotency-Key", "restart-key"}});
  EXPECT_EQ(retry.result_int(), 200) << retry.body();
  EXPECT_EQ(body(retry)["id"], q);
  EXPECT_EQ(body(call(http::verb::get, "/v1/jobs"))["total"], 3);
  auto other = post_as("btok", "/v1/jobs", queued, {{"Idempotency-Key", "restart-key"}});
  EXPECT_EQ(other.result_int(), 201) << other.body();
  EXPECT_NE(body(other)["id"], q);
  service_->tick();  // b's slots are free again: q starts
  EXPECT_EQ(body(call(http::verb::get, "/v1/jobs/" + q))["state"], "running");
}

TEST(JobStore, RoundTrip) {
  TempDir dir;
  Job j;
  j.id = "jabc";
  j.name = "n";
  j.owner = "alice";
  j.state = JobState::kRunning;
  j.world_size = 3;
  j.config = {{"a", 1}};
  j.idempotency_key = "k";
  j.created_ms = 1000;
  j.started_ms = 2000;
  j.pid = 42;
  j.pgid = 42;
  j.exit_code = 7;
  j.error = "e";
  j.secret_hash = "h";
  j.cancel_requested = true;
  j.cancel_ms = 3000;
  {
    JobStore s(dir.path() + "/jobs.db");
    s.insert(j);
    EXPECT_GT(j.seq, 0);
    j.last_progress = {{"type", "progress"}, {"step", 1}};
    s.append_report(j, 5000, j.last_progress.dump());
    j.result = {{"final_test_accuracy", 0.5}};
    s.update(j);
  }
  JobStore s(dir.path() + "/jobs.db");
  auto all = s.load_all();
  ASSERT_EQ(all.size(), 1u);
  const Job& k = all[0];
  EXPECT_EQ(job_to_json(k), job_to_json(j));
  EXPECT_EQ(k.seq, j.seq);
  EXPECT_EQ(k.config, j.config);
  EXPECT_EQ(k.idempotency_key, "k");
  EXPECT_EQ(k.pgid, 42);
  EXPECT_EQ(k.secret_hash, "h");
  EXPECT_TRUE(k.cancel_requested);
  EXPECT_EQ(k.cancel_ms, 3000);
  EXPECT_EQ(k.result, j.result);
  auto reps = s.reports("jabc");
  ASSERT_EQ(reps.size(), 1u);
  EXPECT_EQ(reps[0].first, 5000);
  EXPECT_EQ(json::parse(reps[0].second), j.last_progress);
}

TEST(JsonGuard, CountsBracketsOutsideStrings) {
  EXPECT_EQ(max_json_depth("{}"), 1);
  EXPECT_EQ(max_json_depth(R"({"a":[1,{"b":[]}]})"), 4);
  EXPECT_EQ(max_json_depth(R"({"a":"[[[[[[\"[[[["})"), 1);
  EXPECT_EQ(max_json_depth(R"("\\")"
                           "[[]]"),
            2);  // escaped backslash closes the string
  EXPECT_EQ(max_json_depth(std::string(65, '[')), 65);
}

TEST(Tokens, ConstantTimeLookup) {
  auto t = Tokens::from_pairs({{"alice", "atok"}, {"bob", "btok"}});
  EXPECT_EQ(t.authenticate("Bearer atok"), "alice");
  EXPECT_EQ(t.authenticate("Bearer btok"), "bob");
  EXPECT_EQ(t.authenticate("Bearer atok "), std::nullopt);
  EXPECT_EQ(t.authenticate("atok"), std::nullopt);
  EXPECT_EQ(t.authenticate(""), std::nullopt);
  EXPECT_EQ(Tokens().authenticate(""), "anonymous");
}

}  // namespace
}  // namespace rx::coord
