// Fuzz target: the coordinator's request -> response function (coordinator/http/router.h), fed through
// the same Beast parser and limits a session uses. Input: raw HTTP/1.1 request bytes. In the
// request, the text JOBID is replaced by the id of a real job (running, from a preset, on a
// stand-in launcher) and JOBSECRET by its per-job secret, so the fuzzer reaches past the 404s and
// 401s into reports, shards, logs and cancel. Tokens: "Bearer atok" is alice (the job's owner),
// "Bearer btok" is bob.
// Properties: route() never throws, answers a status in [200, 600) with a body, every error body is
// {"error": {"code", "message", "field"}} JSON, no request yields a 500 (an unexpected exception
// caught by the router's last resort), and the job's body keeps its documented field types whatever
// a report stored (regressions/router/report_bad_types), and no POST body with a NUL is accepted.
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "coordinator/http/router.h"
#include "fuzz/fuzz_check.h"
#include "tests/coordinator/test_support.h"

namespace {

namespace http = boost::beast::http;
using rx::coord::FakeLauncher;
using rx::coord::FakeState;

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  for (size_t p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size()))
    s.replace(p, from.size(), to);
}

// The job body keeps the types api/openapi.yaml documents for Job, whatever a request stored.
void check_job_body(const std::string& text) {
  const auto j = nlohmann::json::parse(text, nullptr, false);
  FUZZ_CHECK(j.is_object(), "job body is not an object: %s", text.c_str());
  auto int_or_null = [](const nlohmann::json& v) { return v.is_null() || v.is_number_integer(); };
  auto num_or_null = [](const nlohmann::json& v) { return v.is_null() || v.is_number(); };
  for (const char* k : {"epoch", "epochs", "step", "steps_per_epoch"})
    FUZZ_CHECK(int_or_null(j["progress"][k]), "progress.%s: %s", k, text.c_str());
  FUZZ_CHECK(num_or_null(j["loss"]) && num_or_null(j["test_accuracy"]), "loss/test_accuracy: %s",
             text.c_str());
  FUZZ_CHECK(j["ranks"].is_array(), "ranks: %s", text.c_str());
  for (const auto& r : j["ranks"])
    FUZZ_CHECK(
        int_or_null(r["rank"]) && num_or_null(r["images_per_sec"]) && int_or_null(r["peak_memory_bytes"]),
        "ranks[]: %s", text.c_str());
}

// [Shared service] Building a JobService and starting a job costs milliseconds (SQLite, the preset,
// the job folder), which held the fuzzer to ~14 inputs/s. One service is shared by up to
// kInputsPerService inputs, then rebuilt, so state left by earlier inputs (more jobs, a cancelled
// seed job) is exercised too but cannot grow without bound. A crash input replayed alone
// (fuzz_replay_router, or fuzz_router FILE) runs on a fresh service.
constexpr int kInputsPerService = 2000;

struct Fixture {
  // Its own state folder (jobs.db, jobs/<id>/), removed after the service: a rebuilt service must not
  // recover the previous one's jobs, which would take the slots the seed job needs.
  rx::coord::TempDir state;
  std::shared_ptr<FakeState> fake = std::make_shared<FakeState>();
  std::unique_ptr<rx::coord::JobService> jobs;
  std::string id, secret;
  int uses = 0;

  Fixture() {
    // data_roots holds /usr/share/datasets, where the seed job's preset reads.
    const rx::coord::ServiceOptions o = rx::coord::test_service_options(state.path(), 4);
    jobs = std::make_unique<rx::coord::JobService>(
        o, std::make_unique<FakeLauncher>(fake),
        rx::coord::Tokens::from_pairs({{"alice", "atok"}, {"bob", "btok"}}));
    jobs->recover();
    const nlohmann::json submit = {
        {"ranks", 2}, {"config", "fashion_mnist_small"}, {"overrides", {{"training.epochs", 1}}}};
    id = jobs->submit("alice", submit, "").id;
    jobs->tick();  // starts it on the stand-in launcher: it now has a secret
    FUZZ_CHECK(fake->started.size() == 1, "the seed job did not start");
    secret = fake->started[0].secret;
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static std::unique_ptr<Fixture> fx;
  if (!fx || ++fx->uses > kInputsPerService) fx = std::make_unique<Fixture>();
  rx::coord::JobService& jobs = *fx->jobs;

  // Parsed exactly as a session would: header and body limits from router.h.
  http::request_parser<http::string_body> parser;
  parser.header_limit(rx::coord::kMaxHeaderBytes);
  parser.body_limit(rx::coord::kMaxBodyBytes + 1);
  parser.eager(true);
  boost::system::error_code ec;
  std::string raw(reinterpret_cast<const char*>(data), size);
  replace_all(raw, "JOBID", fx->id);
  replace_all(raw, "JOBSECRET", fx->secret);

  // put() may stop at a chunk boundary: feed until done, an error, or no progress (need more input).
  size_t used = 0;
  while (!parser.is_done() && used < raw.size()) {
    const size_t n = parser.put(boost::asio::buffer(raw.data() + used, raw.size() - used), ec);
    if (ec || n == 0) break;
    used += n;
  }
  if (!parser.is_done()) return 0;
  rx::coord::ServiceState state(jobs);
  rx::coord::Response res;
  try {
    res = rx::coord::route(parser.get(), state);
  } catch (const std::exception& e) {
    FUZZ_CHECK(false, "route() threw: %s", e.what());
  }
  const int st = res.result_int();
  FUZZ_CHECK(st >= 200 && st < 600, "status %d", st);
  FUZZ_CHECK(st != 500, "500 for a request: %s", res.body().c_str());
  // A NUL byte is never valid JSON (regressions/router/submit_nul_in_body).
  FUZZ_CHECK(parser.get().body().find('\0') == std::string::npos || st >= 400 ||
                 parser.get().method() != http::verb::post,
             "a JSON body with a NUL byte was accepted (%d)", st);
  if (st >= 400 && parser.get().method() != http::verb::head) {
    const auto body = nlohmann::json::parse(res.body(), nullptr, false);
    FUZZ_CHECK(body.is_object() && body.contains("error") && body["error"].is_object() &&
                   body["error"].contains("code") && body["error"].contains("message") &&
                   body["error"].contains("field"),
               "error body is not {\"error\":{code,message,field}}: %s", res.body().c_str());
  }
  jobs.tick();  // whatever the request changed must leave the scheduler consistent
  check_job_body(*jobs.job_body(fx->id));
  return 0;
}
