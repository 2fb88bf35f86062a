#pragma once
// The one rank runner of the C++ tests: N in-process ranks, one thread each (the thread backend's
// model of a world). [Rank failures] An exception leaving a std::thread calls std::terminate and takes
// the whole test binary down without saying which rank failed or why; run_ranks catches it on the
// rank's thread, joins every thread, and returns what each rank ended with, so that the test fails
// with the rank and the message. A rank blocked in a collective on a failed peer is freed by the
// collective's timeout, so run_ranks returns.
#include <gtest/gtest.h>

#include <exception>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace rx::testing {

// Per rank: "" when fn returned, else the message of what it threw (never empty).
using RankErrors = std::vector<std::string>;

inline RankErrors run_ranks(int world, const std::function<void(int rank)>& fn) {
  RankErrors errors(static_cast<size_t>(world));
  std::vector<std::thread> threads;
  threads.reserve(static_cast<size_t>(world));
  for (int r = 0; r < world; ++r)
    threads.emplace_back([&, r] {
      try {
        fn(r);
      } catch (const std::exception& e) {
        errors[r] = *e.what() ? e.what() : "threw an exception with an empty message";
      } catch (...) {
        errors[r] = "threw a non-std::exception";
      }
    });
  for (auto& t : threads) t.join();
  return errors;
}

// For ASSERT_TRUE / EXPECT_TRUE: success when no rank threw; otherwise names each failed rank.
inline ::testing::AssertionResult all_ranks_ok(const RankErrors& errors) {
  std::string failed;
  for (size_t r = 0; r < errors.size(); ++r)
    if (!errors[r].empty()) failed += "\n  rank " + std::to_string(r) + ": " + errors[r];
  if (failed.empty()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "rank(s) failed:" << failed;
}

}  // namespace rx::testing
