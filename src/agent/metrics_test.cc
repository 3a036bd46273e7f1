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
  auto& drain = s.counters.checkpoints["drain"];
  drain.count(true, 1.5, 100000000);
  drain.count(true, 25, 23456789);
  drain.count(true, 0.5, 0);
  drain.count(false, 0.5, 0);
  s.counters.checkpoints["archctl"].count(true, 2, 10);
  s.counters.checkpoints_skipped = 2;
  s.counters.restores["create"].count(true, 0.3, 4096);
  s.counters.restores["create"].count(true, 0.3, 0);
  s.counters.notices["spot"] = 1;
  s.managed_containers = 4;
  s.quarantined_checkpoints = 1;
  s.draining = true;
  s.key_ages = {{"default", "job-1", 42}, {"k8s.io+team", "a\"b", 7}};
  s.keys = 3;
  s.watcher = {.enabled = true, .last_success = 1764000000, .consecutive_errors = 2};
  std::string text = render_metrics(s);
  for (const char* line : {
           "# TYPE arch_checkpoints_total counter\n",
           "arch_checkpoints_total{source=\"drain\",outcome=\"ok\"} 3\n",
           "arch_checkpoints_total{source=\"drain\",outcome=\"failed\"} 1\n",
           "arch_checkpoints_total{source=\"archctl\",outcome=\"ok\"} 1\n",
           "arch_checkpoints_total{source=\"on_stop\",outcome=\"ok\"} 0\n",
           "arch_checkpoints_total{source=\"finalize\",outcome=\"failed\"} 0\n",
           "arch_checkpoints_total{source=\"job\",outcome=\"ok\"} 0\n",
           "arch_checkpoints_skipped_total 2\n",
           "arch_build_info{version=\"",
           "arch_restores_total{source=\"create\",outcome=\"ok\"} 2\n",
           "arch_restores_total{source=\"create\",outcome=\"failed\"} 0\n",
           "arch_restores_total{source=\"job\",outcome=\"ok\"} 0\n",
           "# TYPE arch_checkpoint_duration_seconds histogram\n",
           "arch_checkpoint_duration_seconds_bucket{source=\"drain\",le=\"0.25\"} 0\n",
           "arch_checkpoint_duration_seconds_bucket{source=\"drain\",le=\"1\"} 2\n",
           "arch_checkpoint_duration_seconds_bucket{source=\"drain\",le=\"2.5\"} 3\n",
           "arch_checkpoint_duration_seconds_bucket{source=\"drain\",le=\"30\"} 4\n",
           "arch_checkpoint_duration_seconds_bucket{source=\"drain\",le=\"+Inf\"} 4\n",
           "arch_checkpoint_duration_seconds_sum{source=\"drain\"} 27.5\n",
           "arch_checkpoint_duration_seconds_count{source=\"drain\"} 4\n",
           "arch_checkpoint_duration_seconds_count{source=\"on_stop\"} 0\n",
           "arch_checkpoint_bytes_total{source=\"drain\"} 123456789\n",
           "arch_checkpoint_bytes_total{source=\"archctl\"} 10\n",
           "# TYPE arch_restore_duration_seconds histogram\n",
           "arch_restore_duration_seconds_count{source=\"create\"} 2\n",
           "arch_restore_bytes_total{source=\"create\"} 4096\n",
           "# TYPE arch_managed_containers gauge\n",
           "arch_managed_containers 4\n",
           "arch_notices_total{kind=\"spot\"} 1\n",
           "arch_notices_total{kind=\"rebalance\"} 0\n",
           "arch_notices_total{kind=\"manual\"} 0\n",
           "arch_quarantined_checkpoints 1\n",
           "arch_node_draining 1\n",
           "# TYPE arch_newest_checkpoint_age_seconds gauge\n",
           "arch_newest_checkpoint_age_seconds{owner=\"default\",key=\"job-1\"} 42\n",
           "arch_newest_checkpoint_age_seconds{owner=\"k8s.io+team\",key=\"a\\\"b\"} 7\n",
           "arch_checkpoint_keys 3\n",
           "arch_notice_watcher_enabled 1\n",
           "arch_notice_watcher_last_success_timestamp_seconds 1764000000\n",
           "arch_notice_watcher_consecutive_errors 2\n",
           "arch_activity_invalid_records_total 0\n",
       }) {
    EXPECT_NE(text.find(line), std::string::npos) << "missing: " << line << "in\n" << text;
  }
  // One HELP and one TYPE per family, every line newline-terminated.
  EXPECT_EQ(text.back(), '\n');
  std::size_t helps = 0, types = 0;
  for (std::size_t p = 0; (p = text.find("# HELP ", p)) != std::string::npos; ++p) ++helps;
  for (std::size_t p = 0; (p = text.find("# TYPE ", p)) != std::string::npos; ++p) ++types;
  EXPECT_EQ(helps, 18u);
  EXPECT_EQ(types, 18u);
}

TEST(Metrics, EscapesLabelValues) {
  EXPECT_EQ(escape_label_value("plain"), "plain");
  EXPECT_EQ(escape_label_value("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
}

TEST(Metrics, ZeroesWhenNothingHappened) {
  std::string text = render_metrics({});
  EXPECT_NE(text.find("arch_node_draining 0\n"), std::string::npos);
  EXPECT_NE(text.find("arch_checkpoint_duration_seconds_bucket{source=\"drain\",le=\"+Inf\"} 0\n"),
            std::string::npos);
  EXPECT_NE(text.find("arch_notice_watcher_enabled 0\n"), std::string::npos);
  EXPECT_EQ(text.find("arch_newest_checkpoint_age_seconds{"), std::string::npos);
}

}  // namespace
}  // namespace arch::agent
