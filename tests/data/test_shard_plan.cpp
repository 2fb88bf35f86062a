#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "common/data/shard_plan.h"
#include "common/util/error.h"

using namespace rx::data;

class ShardPlanProperties : public ::testing::TestWithParam<std::tuple<int, int64_t, ShardMode>> {};

TEST_P(ShardPlanProperties, DisjointCoveringEqualDeterministic) {
  const auto [w, n, mode] = GetParam();
  const int64_t len = shard_length(n, w);
  std::multiset<int64_t> all;
  std::vector<std::vector<int64_t>> epoch0;
  for (int r = 0; r < w; ++r) {
    ShardSpec s{n, w, r, 0, 42, mode, true};
    auto idx = shard_indices(s);
    ASSERT_EQ(static_cast<int64_t>(idx.size()), len);
    EXPECT_EQ(idx, shard_indices(s)) << "same inputs must give the same plan";
    s.epoch = 1;
    if (len > 2) {
      EXPECT_NE(idx, shard_indices(s)) << "epochs must differ";
    }
    for (auto i : idx) {
      ASSERT_GE(i, 0);
      ASSERT_LT(i, n);
      all.insert(i);
    }
    epoch0.push_back(idx);
  }
  // Covers the dataset; duplicates only from padding, at most w*len - n of them.
  std::set<int64_t> distinct(all.begin(), all.end());
  EXPECT_EQ(static_cast<int64_t>(distinct.size()), n);
  EXPECT_EQ(static_cast<int64_t>(all.size()) - n, len * w - n);
}

INSTANTIATE_TEST_SUITE_P(AllWorlds, ShardPlanProperties,
                         ::testing::Combine(::testing::Range(1, 9),
                                            ::testing::Values<int64_t>(1, 7, 97, 1000, 1001),
                                            ::testing::Values(ShardMode::kStatic, ShardMode::kGlobal)));

TEST(ShardPlan, StaticRankOwnsItsBlock) {
  const int64_t n = 103;
  const int w = 4;
  for (int r = 0; r < w; ++r) {
    auto idx = shard_indices({n, w, r, 3, 7, ShardMode::kStatic, true});
    auto block = static_block(n, w, r);
    std::sort(idx.begin(), idx.end());
    for (int64_t i = block.begin; i < block.end; ++i)
      EXPECT_TRUE(std::binary_search(idx.begin(), idx.end(), i)) << "rank " << r << " index " << i;
  }
}

TEST(ShardPlan, GlobalWithoutShuffleIsStrided) {
  auto idx = shard_indices({10, 3, 1, 0, 0, ShardMode::kGlobal, false});
  EXPECT_EQ(idx, (std::vector<int64_t>{1, 4, 7, 0}));  // padded with the head: position 10 -> 0
}

TEST(ShardPlan, RejectsBadInputsNamingTheField) {
  try {
    shard_indices({10, 2, 2, 0, 0, ShardMode::kGlobal, true});
    FAIL() << "rank out of range accepted";
  } catch (const rx::ConfigError& e) {
    EXPECT_EQ(e.field(), "rank");
  }
  EXPECT_THROW(shard_length(0, 2), rx::ConfigError);
  EXPECT_THROW(shard_length(5, 0), rx::ConfigError);
  EXPECT_THROW(parse_shard_mode("blocks"), rx::ConfigError);
  for (auto mode : {ShardMode::kStatic, ShardMode::kGlobal})
    EXPECT_EQ(parse_shard_mode(shard_mode_name(mode)), mode);
  EXPECT_STREQ(shard_mode_name(ShardMode::kGlobal), "global");
}

TEST(ShardPlan, ResumeOnSameWorldContinuesExactly) {
  for (auto mode : {ShardMode::kGlobal, ShardMode::kStatic}) {
    const int64_t n = 103;
    const int w = 4;
    for (int r = 0; r < w; ++r) {
      auto full = shard_indices({n, w, r, 2, 9, mode, true, 0});
      auto rest = shard_indices({n, w, r, 2, 9, mode, true, 5 * w});
      ASSERT_EQ(rest.size() + 5, full.size());
      EXPECT_TRUE(std::equal(rest.begin(), rest.end(), full.begin() + 5)) << "rank " << r;
    }
  }
}

TEST(ShardPlan, ResumeOnAnotherWorldNeitherRepeatsNorSkips) {
  const int64_t n = 1000;
  const int64_t consumed = 2 * 3 * 64;  // 2 steps of batch 64 on 3 ranks
  std::multiset<int64_t> seen;
  for (int r = 0; r < 3; ++r) {
    auto full = shard_indices({n, 3, r, 4, 1, ShardMode::kGlobal, true, 0});
    seen.insert(full.begin(), full.begin() + 2 * 64);
  }
  for (int r = 0; r < 2; ++r) {  // resumed on 2 ranks
    auto rest = shard_indices({n, 2, r, 4, 1, ShardMode::kGlobal, true, consumed});
    EXPECT_EQ(static_cast<int64_t>(rest.size()), shard_length_from(n, 2, consumed));
    seen.insert(rest.begin(), rest.end());
  }
  std::set<int64_t> distinct(seen.begin(), seen.end());
  EXPECT_EQ(static_cast<int64_t>(distinct.size()), n) << "every sample seen";
  EXPECT_EQ(static_cast<int64_t>(seen.size()), n) << "none twice (1000 - 384 = 616 splits evenly)";
  EXPECT_THROW(shard_indices({n, 2, 0, 4, 1, ShardMode::kStatic, true, 3}), rx::ConfigError);
}
