#include "container/deadline_plan.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "base/temp_dir.h"

namespace arch {
namespace {

constexpr uint64_t kGiB = uint64_t{1} << 30;
constexpr uint64_t kMiB = uint64_t{1} << 20;

// The case measured before the planner: six 1 GiB containers, a 10 s deadline, a store that
// takes ~300 MB/s whether one dump or four write to it (one dump ~4 s). Four were started
// side by side, none finished in time.
TEST(DeadlinePlan, StoreBoundDumpsRunOneAtATimeAndOnlyWhatFits) {
  std::vector<uint64_t> bytes(6, kGiB);
  StoreRates rates{.single_bps = 300e6, .aggregate_bps = 305e6};
  auto plan = plan_dumps(bytes, rates, {.seconds_left = 10, .parallel = 4});
  EXPECT_TRUE(plan.predicted);
  EXPECT_EQ(plan.workers, 1);                      // sharing the store only makes every dump late
  ASSERT_EQ(plan.order.size(), 2u) << plan.basis;  // 2 x (3.6 s + 0.5 s) <= 9 s
  int skipped = 0;
  for (const auto& e : plan.entries) {
    if (!e.admitted) {
      ++skipped;
      EXPECT_NE(e.reason.find("keeps running"), std::string::npos) << e.reason;
      EXPECT_GT(e.predicted_finish_s, 9);
    } else {
      EXPECT_LE(e.predicted_finish_s, 9);
    }
  }
  EXPECT_EQ(skipped, 4);
  EXPECT_NE(plan.basis.find("one dump at a time"), std::string::npos) << plan.basis;
}

TEST(DeadlinePlan, SmallestFirstMaximisesTheNumberSaved) {
  std::vector<uint64_t> bytes = {900 * kMiB, 100 * kMiB, 300 * kMiB, 50 * kMiB};
  StoreRates rates{.single_bps = 100e6, .aggregate_bps = 0};
  auto plan = plan_dumps(bytes, rates, {.seconds_left = 8, .parallel = 2, .margin_s = 1});
  EXPECT_EQ(plan.workers, 1);
  EXPECT_EQ(plan.order, (std::vector<std::size_t>{3, 1, 2}));  // 0.55 + 1.55 + 3.65 s
  EXPECT_FALSE(plan.entries[0].admitted);
}

TEST(DeadlinePlan, CpuBoundStoreKeepsParallelDumps) {
  std::vector<uint64_t> bytes(8, 512 * kMiB);
  StoreRates rates{.single_bps = 200e6, .aggregate_bps = 700e6};
  auto plan = plan_dumps(bytes, rates, {.seconds_left = 8, .parallel = 4});
  EXPECT_EQ(plan.workers, 4);
  EXPECT_GT(plan.order.size(), 2u);  // one at a time would have saved 2
}

TEST(DeadlinePlan, EverythingFitsGoesParallel) {
  std::vector<uint64_t> bytes(3, 10 * kMiB);
  StoreRates rates{.single_bps = 100e6, .aggregate_bps = 90e6};
  auto plan = plan_dumps(bytes, rates, {.seconds_left = 60, .parallel = 4});
  EXPECT_EQ(plan.workers, 4);
  EXPECT_EQ(plan.order.size(), 3u);
}

TEST(DeadlinePlan, OnlyTheOneStreamRateKnownAndEverythingFits) {
  // Seen in CI: earlier single checkpoints recorded `single` only; twenty small containers
  // with 100 s left must all be attempted, side by side, at a finite predicted time.
  std::vector<uint64_t> bytes(20, 56 << 10);
  for (StoreRates rates : {StoreRates{.single_bps = 90e6, .aggregate_bps = 0},
                           StoreRates{.single_bps = 0, .aggregate_bps = 90e6}}) {
    auto plan = plan_dumps(bytes, rates, {.seconds_left = 100, .parallel = 4});
    EXPECT_EQ(plan.order.size(), 20u) << plan.basis;
    EXPECT_EQ(plan.workers, 4);
    for (const auto& e : plan.entries) {
      EXPECT_TRUE(e.admitted) << e.reason;
      EXPECT_GT(e.predicted_finish_s, 0);
      EXPECT_LT(e.predicted_finish_s, 10);
    }
  }
}

TEST(DeadlinePlan, WithoutAMeasuredRateEveryContainerIsAttempted) {
  std::vector<uint64_t> bytes = {3 * kGiB, kGiB};
  auto plan = plan_dumps(bytes, StoreRates{}, {.seconds_left = 1, .parallel = 4});
  EXPECT_FALSE(plan.predicted);
  EXPECT_EQ(plan.order, (std::vector<std::size_t>{1, 0}));
  EXPECT_EQ(plan.workers, 4);
}

TEST(DeadlinePlan, RatesAreKeptPerStoreAndAveraged) {
  TempDir dir;
  EXPECT_EQ(load_store_rates(dir.path(), "/s").single_bps, 0);
  ASSERT_TRUE(record_store_rates(dir.path(), "/s", 100e6, 0));
  ASSERT_TRUE(record_store_rates(dir.path(), "/t", 0, 50e6));
  ASSERT_TRUE(record_store_rates(dir.path(), "/s", 200e6, 0));
  auto s = load_store_rates(dir.path(), "/s");
  EXPECT_DOUBLE_EQ(s.single_bps, 150e6);
  EXPECT_EQ(s.aggregate_bps, 0);
  EXPECT_DOUBLE_EQ(load_store_rates(dir.path(), "/t").aggregate_bps, 50e6);
  struct stat st {};
  ASSERT_EQ(::stat((dir.path() + "/store-rates.json").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST(DeadlinePlan, MalformedRatesFileMeansNoRate) {
  TempDir dir;
  for (const char* text : {"not json", "[1,2]", R"({"/s": {"single_bps": "fast"}})",
                           R"({"/s": {"single_bps": -5, "aggregate_bps": 1e400}})"}) {
    std::ofstream(dir.path() + "/store-rates.json") << text;
    auto r = load_store_rates(dir.path(), "/s");
    EXPECT_EQ(r.single_bps, 0) << text;
  }
}

TEST(DeadlinePlan, PredictionCountsTheWritableLayerWithoutFollowingLinks) {
  TempDir dir;
  std::string upper = dir.path() + "/upper";
  ASSERT_EQ(::mkdir(upper.c_str(), 0755), 0);
  ASSERT_EQ(::mkdir((upper + "/sub").c_str(), 0755), 0);
  {
    std::ofstream f(upper + "/sub/data");
    f << std::string(3 << 20, 'x');
  }
  ::sync();
  // A link to a big tree outside the layer is not walked.
  ASSERT_EQ(::symlink("/usr", (upper + "/escape").c_str()), 0);
  uint64_t got = predict_checkpoint_bytes(0, upper);
  EXPECT_GE(got, uint64_t{3} << 20);
  EXPECT_LT(got, uint64_t{4} << 20);
  EXPECT_EQ(predict_checkpoint_bytes(0, dir.path() + "/missing"), 0u);
}

}  // namespace
}  // namespace arch
