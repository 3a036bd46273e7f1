// Tests for the Prometheus exposition of archd's metrics.
#include "metrics.h"

#include <gtest/gtest.h>

namespace arch::agent {
namespace {

TEST(Metrics, HistogramCountsIntoTheFirstBucketThatHoldsTheValue) {
  Histogram h;
  h.observe(0.004);
  h.observe(0.01);  // le="0.01" is inclusive
  h.observe(0.2);   // (0.1, 0.25]
  h.observe(7);     // (5, 10]
  h.observe(1000);
  EXPECT_EQ(h.counts[0], 2u);
  EXPECT_EQ(h.counts[4], 1u);
  EXPECT_EQ(h.counts[9], 1u);
  EXPECT_EQ(h.counts.back(), 1u);
  EXPECT_EQ(h.count, 5u);
  EXPECT_DOUBLE_EQ(h.sum, 1007.214);
}

TEST(Metrics, FormatsSampleValuesAsPrometheusDoes) {
  EXPECT_EQ(format_sample_value(3), "3");
  EXPECT_EQ(format_sample_value(0.5), "0.5");
  EXPECT_EQ(format_sample_value(1.0 / 0.0), "+Inf");
  EXPECT_EQ(format_sample_value(0), "0");
}

TEST(Metrics, RendersEveryFamilyWithHelpTypeAndSamples) {
  MetricsSnapshot s;
  s.counters.checkpoints_ok = 3;
  s.counters.checkpoints_failed = 1;
  s.counters.checkpoints_skipped = 2;
  s.counters.checkpoint_bytes = 123456789;
  s.counters.restores_ok = 2;
  s.counters.notices["spot"] = 1;
  s.counters.checkpoint_seconds.observe(1.5);
  s.counters.checkpoint_seconds.observe(25);
  s.counters.restore_seconds.observe(0.3);
  s.counters.restore_bytes = 4096;
  s.managed_containers = 4;
  s.quarantined_checkpoints = 1;
  s.draining = true;
  std::string text = render_metrics(s);
  for (const char* line : {
           "# TYPE arch_checkpoints_total counter\n",
           "arch_checkpoints_total{outcome=\"ok\"} 3\n",
           "arch_checkpoints_total{outcome=\"failed\"} 1\n",
           "arch_checkpoints_skipped_total 2\n",
           "arch_build_info{version=\"",
           "arch_restores_total{outcome=\"ok\"} 2\n",
           "arch_restores_total{outcome=\"failed\"} 0\n",
           "# TYPE arch_checkpoint_duration_seconds histogram\n",
           "arch_checkpoint_duration_seconds_bucket{le=\"1\"} 0\n",
           "arch_checkpoint_duration_seconds_bucket{le=\"2.5\"} 1\n",
           "arch_checkpoint_duration_seconds_bucket{le=\"30\"} 2\n",
           "arch_checkpoint_duration_seconds_bucket{le=\"+Inf\"} 2\n",
           "arch_checkpoint_duration_seconds_sum 26.5\n",
           "arch_checkpoint_duration_seconds_count 2\n",
           "arch_checkpoint_bytes_total 123456789\n",
           "# TYPE arch_restore_duration_seconds histogram\n",
           "arch_restore_duration_seconds_count 1\n",
           "arch_restore_bytes_total 4096\n",
           "# TYPE arch_managed_containers gauge\n",
           "arch_managed_containers 4\n",
           "arch_notices_total{kind=\"spot\"} 1\n",
           "arch_notices_total{kind=\"rebalance\"} 0\n",
           "arch_notices_total{kind=\"manual\"} 0\n",
           "arch_quarantined_checkpoints 1\n",
           "arch_node_draining 1\n",
       }) {
    EXPECT_NE(text.find(line), std::string::npos) << "missing: " << line << "in\n" << text;
  }
  // One HELP and one TYPE per family, every line newline-terminated.
  EXPECT_EQ(text.back(), '\n');
  std::size_t helps = 0, types = 0;
  for (std::size_t p = 0; (p = text.find("# HELP ", p)) != std::string::npos; ++p) ++helps;
  for (std::size_t p = 0; (p = text.find("# TYPE ", p)) != std::string::npos; ++p) ++types;
  EXPECT_EQ(helps, 12u);
  EXPECT_EQ(types, 12u);
}

TEST(Metrics, ZeroesWhenNothingHappened) {
  std::string text = render_metrics({});
  EXPECT_NE(text.find("arch_node_draining 0\n"), std::string::npos);
  EXPECT_NE(text.find("arch_checkpoint_duration_seconds_bucket{le=\"+Inf\"} 0\n"),
            std::string::npos);
}

}  // namespace
}  // namespace arch::agent
