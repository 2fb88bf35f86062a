// GET /v1/jobs/{id}/trace: the routing function over a real JobService and store (FakeLauncher for
// mpirun, as in test_routes.cpp): same read rules as the job's other reads, 404 without a trace.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/util/file_util.h"
#include "coordinator/http/router.h"
#include "tests/coordinator/test_support.h"

namespace rx::coord {
namespace {

namespace http = boost::beast::http;
namespace fs = std::filesystem;
using nlohmann::json;

class TraceRouteTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServiceOptions o = test_service_options(dir_.path(), 2);
    auto tokens = Tokens::from_pairs({{"alice", "atok"}, {"bob", "btok"}});
    tokens.add("root", "rtok", true);
    service_ = std::make_unique<JobService>(o, std::make_unique<FakeLauncher>(fake_), std::move(tokens));
    service_->recover();
    state_ = std::make_unique<ServiceState>(*service_);
  }
  Response call(http::verb v, const std::string& target, const std::string& token) {
    Request r{v, target, 11};
    if (!token.empty()) r.set(http::field::authorization, "Bearer " + token);
    if (v == http::verb::post) r.body() = "{}";
    r.prepare_payload();
    return route(r, *state_);
  }
  std::string submit() {
    Request r{http::verb::post, "/v1/jobs", 11};
    r.set(http::field::authorization, "Bearer atok");
    r.body() = json{{"config", "fashion_mnist_small"},
                    {"ranks", 1},
                    {"overrides", {{"training.epochs", 1}, {"output.trace", true}}}}
                   .dump();
    r.prepare_payload();
    auto res = route(r, *state_);
    EXPECT_EQ(res.result_int(), 201) << res.body();
    return json::parse(res.body())["id"].get<std::string>();
  }

  TempDir dir_;
  std::shared_ptr<FakeState> fake_ = std::make_shared<FakeState>();
  std::unique_ptr<JobService> service_;
  std::unique_ptr<ServiceState> state_;
};

TEST_F(TraceRouteTest, ServedToReadersOnly404WithoutTrace) {
  const std::string id = submit();
  const std::string target = "/v1/jobs/" + id + "/trace";
  // No trace yet: 404 that says why.
  auto r = call(http::verb::get, target, "atok");
  ASSERT_EQ(r.result_int(), 404) << r.body();
  EXPECT_NE(json::parse(r.body())["error"]["message"].get<std::string>().find("output.trace"),
            std::string::npos);

  const std::string run = service_->job_dir(id) + "/run";
  fs::create_directories(run);
  const std::string doc = R"({"traceEvents":[{"name":"forward","ph":"X","ts":1,"dur":2,"pid":0,"tid":0}]})";
  write_file_atomic(run + "/trace.json", doc);

  r = call(http::verb::get, target, "atok");  // the owner
  ASSERT_EQ(r.result_int(), 200) << r.body();
  EXPECT_EQ(r.body(), doc);
  EXPECT_EQ(r[http::field::content_type], "application/json");
  EXPECT_EQ(r[http::field::content_disposition], "attachment; filename=\"trace-" + id + ".json\"");
  EXPECT_EQ(call(http::verb::get, target, "rtok").result_int(), 200);  // an admin
  EXPECT_EQ(call(http::verb::head, target, "atok").result_int(), 200);
  EXPECT_EQ(call(http::verb::get, target, "").result_int(), 401);       // no token
  EXPECT_EQ(call(http::verb::get, target, "wrong").result_int(), 401);  // a bad one
  EXPECT_EQ(call(http::verb::get, target, "btok").result_int(),
            404);  // someone else's job: like a missing one
  EXPECT_EQ(call(http::verb::post, target, "atok").result_int(), 405);
  EXPECT_EQ(call(http::verb::get, "/v1/jobs/nope/trace", "rtok").result_int(), 404);
  EXPECT_EQ(call(http::verb::get, "/v1/jobs/" + id + "/trace/x", "atok").result_int(), 404);

  // Only a regular file is served: a symlink in its place (to another job's or any file) is no trace.
  fs::remove(run + "/trace.json");
  fs::create_symlink(dir_.path() + "/jobs.db", run + "/trace.json");
  EXPECT_EQ(call(http::verb::get, target, "atok").result_int(), 404);
}

}  // namespace
}  // namespace rx::coord
