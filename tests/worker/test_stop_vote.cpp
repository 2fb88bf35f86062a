// [Stop vote] over the thread backend, one thread per rank: a signal on any one rank, at any step,
// stops every rank after the same step (the one after the signal's); a world of one stops at once;
// a rank that stops voting fails its peers' next vote within the timeout instead of hanging them.
#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <vector>

#include "common/comm/thread/thread_communicator.h"
#include "tests/support/rank_threads.h"
#include "worker/stop_vote.h"

using namespace rx;

namespace {

constexpr comm::Millis kTimeout{20000};

class StopVoteTest : public ::testing::TestWithParam<int> {};

TEST_P(StopVoteTest, EveryRankStopsAfterTheSameStep) {
  const int world = GetParam();
  for (int signalled = 0; signalled < world; ++signalled) {
    for (const int signal_step : {0, 3}) {
      auto group = comm::make_thread_group(world);
      std::vector<int> stopped_after(static_cast<size_t>(world), -1);
      const auto errors = rx::testing::run_ranks(world, [&](int r) {
        worker::StopVote vote(world > 1 ? group[static_cast<size_t>(r)].get() : nullptr, kTimeout);
        for (int step = 0; step < 10; ++step)
          if (vote.next(r == signalled && step >= signal_step ? 10 : 0)) {
            stopped_after[static_cast<size_t>(r)] = step;
            return;
          }
      });
      ASSERT_TRUE(rx::testing::all_ranks_ok(errors));
      const int expected = world > 1 ? signal_step + 1 : signal_step;
      for (int r = 0; r < world; ++r)
        EXPECT_EQ(stopped_after[static_cast<size_t>(r)], expected)
            << "rank " << r << ", signal on rank " << signalled << " at step " << signal_step;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Worlds, StopVoteTest, ::testing::Values(1, 2, 3));

TEST(StopVote, NoSignalNeverStops) {
  auto group = comm::make_thread_group(2);
  std::atomic<int> stops{0};
  const auto errors = rx::testing::run_ranks(2, [&](int r) {
    worker::StopVote vote(group[static_cast<size_t>(r)].get(), kTimeout);
    for (int step = 0; step < 20; ++step) stops += vote.next(0) ? 1 : 0;
    vote.finish();  // the vote cast after the last step, taken in on every rank
  });
  ASSERT_TRUE(rx::testing::all_ranks_ok(errors));
  EXPECT_EQ(stops.load(), 0);
}

// Rank 1 leaves after one vote (finishing it); rank 0's vote after that finds no partner, and reading
// it fails with a timeout instead of hanging.
TEST(StopVote, AMissingPeerFailsTheVoteWithinTheTimeout) {
  auto group = comm::make_thread_group(2);
  const comm::Millis short_timeout{300};
  const auto errors = rx::testing::run_ranks(2, [&](int r) {
    worker::StopVote vote(group[static_cast<size_t>(r)].get(), short_timeout);
    vote.next(0);
    if (r == 1) return vote.finish();  // completes once rank 0 reads the first vote
    vote.next(0);                      // reads the first vote, casts a second that nobody joins
    vote.next(0);                      // waits for it: times out
  });
  EXPECT_EQ(errors[1], "");
  EXPECT_NE(errors[0].find("timed out"), std::string::npos) << errors[0];
}

}  // namespace
