#pragma once
// Test doubles shared by the coordinator's C++ tests.
#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "coordinator/jobs/job_service.h"
#include "coordinator/launch/launcher.h"
#include "tests/support/temp_dir.h"

namespace rx::coord {

// An in-process Launcher: records starts/cancels; a test decides when a "process" exits.
struct FakeState {
  std::vector<LaunchSpec> started;
  std::map<int64_t, std::optional<ExitInfo>> exits;
  std::vector<std::pair<int64_t, bool>> cancels;
  std::set<int64_t> alive_on_reattach;
  int64_t next_pid = 1000;
  std::function<void(const LaunchSpec&)> on_start;     // runs inside start(), after the pid is assigned
  std::function<void(const LaunchHandle&)> on_cancel;  // runs inside cancel()
  std::map<std::string, int64_t> launched_alive;       // job id -> pid find_launched() reports
};

class FakeLauncher : public Launcher {
 public:
  explicit FakeLauncher(std::shared_ptr<FakeState> s) : s_(std::move(s)) {}
  LaunchHandle start(const LaunchSpec& spec) override {
    s_->started.push_back(spec);
    const int64_t pid = s_->next_pid++;
    s_->exits[pid] = std::nullopt;
    if (s_->on_start) s_->on_start(spec);
    return LocalProcess{pid, 0};
  }
  std::optional<LaunchHandle> find_launched(const LaunchSpec& spec, int64_t) override {
    auto it = s_->launched_alive.find(spec.job_id);
    if (it == s_->launched_alive.end()) return std::nullopt;
    return LocalProcess{it->second, 0};
  }
  std::optional<ExitInfo> poll(const LaunchHandle& h) override { return s_->exits[h.record_id()]; }
  void cancel(const LaunchHandle& h, bool force) override {
    s_->cancels.emplace_back(h.record_id(), force);
    if (s_->on_cancel) s_->on_cancel(h);
  }
  bool reattach(const LaunchHandle& h) override { return s_->alive_on_reattach.count(h.record_id()) > 0; }

 private:
  std::shared_ptr<FakeState> s_;
};

inline std::string source_dir() {
  const char* s = std::getenv("RX_SOURCE_DIR");
  return s ? s : RX_TEST_SOURCE_DIR;
}

// The options every in-process JobService of these tests starts from; a test then sets only what it
// changes (limits, restart backoff, extra data or weights roots).
inline ServiceOptions test_service_options(const std::string& state_dir, int slots) {
  ServiceOptions o;
  o.state_dir = state_dir;  // the test's own scratch folder (jobs.db, jobs/<id>/)
  o.slots = slots;
  o.configs_dir = source_dir() + "/configs";  // the repository's presets (fashion_mnist_small, ...)
  // A closed port: a stand-in worker's reports to the coordinator fail fast instead of hanging, and
  // nothing in-process listens anyway (a test with a real Listener calls set_self_url).
  o.self_url = "http://127.0.0.1:1";
  o.paths.data_roots = {"/usr/share/datasets"};  // where Debian's dataset-fashion-mnist installs
  return o;
}

using TempDir = rx::testing::TempDir;  // the tests' one scratch folder

}  // namespace rx::coord
