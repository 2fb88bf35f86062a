// Hang detection under mpiexec -np N (test_hang_mpi_np2/3): the last rank stops taking part in
// collective #2 (it withholds it until the report exists); every other rank's wait must end with
// HangDetected within hang_timeout_s plus a margin, the report must name exactly that rank with the
// step and phase it was last seen in, and exactly one rank must have written it. Afterwards the
// withheld collective is completed so the job ends cleanly. Verdict agreed with plain MPI.
#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "common/comm/hang/hang_watchdog.h"
#include "common/comm/hang/traced_communicator.h"
#include "common/comm/mpi/mpi_communicator.h"

namespace rx::comm::hang {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr double kHangTimeout = 1.0;
constexpr double kMargin = 4.0;  // heartbeat interval, file system, an oversubscribed node

std::string shared_dir() {
  // Rank 0 names the folder (its pid) and tells the others with plain MPI, not the code under test.
  long long pid = getpid();
  MPI_Bcast(&pid, 1, MPI_LONG_LONG, 0, MPI_COMM_WORLD);
  return (std::filesystem::temp_directory_path() / ("rx_hang_mpi_" + std::to_string(pid))).string();
}

template <typename Pred>
bool poll_until(Pred pred, double seconds) {
  const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
  while (!pred()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

TEST(HangMpi, ReportNamesTheRankThatStoppedParticipating) {
  const std::string dir = shared_dir();
  auto raw = make_mpi_communicator(MPI_COMM_WORLD);
  Communicator* inner = raw.get();
  const int rank = inner->rank(), world = inner->world_size();
  const int culprit = world - 1;
  auto trace = std::make_shared<CollectiveTrace>();
  TracedCommunicator comm(std::move(raw), trace);
  int mine = 0;
  WatchdogOptions o{dir, "mpitest", rank, world, kHangTimeout, 0.2, 60, 20};
  auto dog = std::make_unique<HangWatchdog>(o, trace, [&](const json&, bool m) { mine += m; });

  auto warm = torch::ones({16});
  comm.allreduce(warm)->wait(Millis(30000));  // collective #1: everyone
  ASSERT_EQ(warm[0].item<float>(), static_cast<float>(world));

  auto t = torch::ones({1000});
  std::shared_ptr<Work> pending;
  if (rank != culprit) {
    mark_step(comm, 7);
    mark_phase(comm, "gradient sync");
    pending = comm.allreduce(t);  // collective #2, which the culprit withholds
    const auto t0 = Clock::now();
    std::string error;
    try {
      pending->wait(Millis(60000));
    } catch (const HangDetected& e) {
      error = e.what();
    }
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    EXPECT_NE(error.find("missing: rank " + std::to_string(culprit) + " ("), std::string::npos) << error;
    EXPECT_GE(secs, kHangTimeout);
    EXPECT_LT(secs, kHangTimeout + kMargin);
  } else {
    mark_step(comm, 7);
    mark_phase(comm, "stuck in test");
    EXPECT_TRUE(poll_until([&] { return trace->tripped(); }, 30)) << "the culprit never learnt of the report";
    EXPECT_THROW(comm.allreduce(t), HangDetected);  // no new collective after a hang report
  }

  if (rank == 0) {
    const json report = json::parse(std::ifstream(dog->report_path()));
    json entered = json::array();
    for (int r = 0; r < culprit; ++r) entered.push_back(r);
    EXPECT_EQ(report["missing"], json::array({culprit}));
    EXPECT_EQ(report["entered"], entered);
    EXPECT_EQ(report["collective"]["seq"], 2);
    EXPECT_EQ(report["collective"]["kind"], "allreduce");
    const json& c = report["ranks"][culprit];
    EXPECT_EQ(c["phase"], "stuck in test");
    EXPECT_EQ(c["step"], 7);
    EXPECT_EQ(c["last_posted"], 1);
    EXPECT_EQ(c["pid"].get<int64_t>() > 0, true);
    EXPECT_EQ(c["process"], "running");  // same host, alive: it just did not enter
    EXPECT_TRUE(c["last_seen"].get<std::string>().find("not in a collective") != std::string::npos) << c;
  }
  int mines = 0;
  MPI_Allreduce(&mine, &mines, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  EXPECT_EQ(mines, 1) << "exactly one rank writes the report";

  // Let the withheld collective finish on every rank, so MPI ends cleanly.
  dog.reset();
  if (rank == culprit) {
    inner->allreduce(t)->wait(Millis(30000));
  } else {
    EXPECT_TRUE(poll_until([&] { return pending->is_completed(); }, 30));
  }
  MPI_Barrier(MPI_COMM_WORLD);
  if (rank == 0) std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace rx::comm::hang

int main(int argc, char** argv) {
  try {
    rx::comm::MpiRuntime mpi(&argc, &argv);
    ::testing::InitGoogleTest(&argc, argv);
    const int local = RUN_ALL_TESTS() != 0 ? 1 : 0;
    int failures = 0;
    MPI_Allreduce(&local, &failures, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (rank == 0) std::printf("[hang_mpi_test] %d ranks failed\n", failures);
    return failures == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hang_mpi_test: %s\n", e.what());
    rx::comm::MpiRuntime::abort(1);
  }
}
