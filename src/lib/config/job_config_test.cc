// Tests for the node config's [jobs] keys and the commented default config.
#include <gtest/gtest.h>

#include "config/node_config.h"

namespace arch {
namespace {

TEST(JobConfig, JobsSection) {
  auto c = parse_node_config(
      "[jobs]\ndump_dir = /dumps\ncompression = none\ncompression_level = 9\nleave_running = "
      "true\n");
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->jobs.dump_dir, "/dumps");
  EXPECT_FALSE(c->jobs.compress);
  EXPECT_EQ(c->jobs.compression_level, 9);
  EXPECT_TRUE(c->jobs.leave_running);
  EXPECT_FALSE(parse_node_config("[jobs]\ndump_dir = relative\n"));
  EXPECT_FALSE(parse_node_config("[jobs]\ncompression = lz4\n"));
  EXPECT_FALSE(parse_node_config("[jobs]\ncompression_level = 20\n"));
  EXPECT_FALSE(parse_node_config("[jobs]\nleave_running = yes\n"));
}

TEST(JobConfig, DefaultTextParsesToTheDefaults) {
  auto c = parse_node_config(default_node_config_text());
  ASSERT_TRUE(c) << c.error().message();
  NodeConfig d;
  EXPECT_EQ(c->runc, d.runc);
  EXPECT_EQ(c->criu, d.criu);
  EXPECT_EQ(c->log_level, d.log_level);
  EXPECT_EQ(c->log_file, d.log_file);
  EXPECT_EQ(c->store_path, d.store_path);
  EXPECT_EQ(c->keep, d.keep);
  EXPECT_EQ(c->state_dir, d.state_dir);
  EXPECT_EQ(c->restore_failure_fails, d.restore_failure_fails);
  EXPECT_EQ(c->agent.socket, d.agent.socket);
  EXPECT_EQ(c->agent.state_file, d.agent.state_file);
  EXPECT_EQ(c->agent.event_log, d.agent.event_log);
  EXPECT_EQ(c->agent.metrics_address, d.agent.metrics_address);
  EXPECT_EQ(c->agent.imds_endpoint, d.agent.imds_endpoint);
  EXPECT_EQ(c->agent.imds_poll_seconds, d.agent.imds_poll_seconds);
  EXPECT_EQ(c->agent.imds_token_ttl_seconds, d.agent.imds_token_ttl_seconds);
  EXPECT_EQ(c->agent.safety_margin_seconds, d.agent.safety_margin_seconds);
  EXPECT_EQ(c->agent.rebalance_action, d.agent.rebalance_action);
  EXPECT_EQ(c->agent.finalize_parallel, d.agent.finalize_parallel);
  EXPECT_EQ(c->agent.containerd_address, d.agent.containerd_address);
  EXPECT_EQ(c->jobs.dump_dir, d.jobs.dump_dir);
  EXPECT_EQ(c->jobs.compress, d.jobs.compress);
  EXPECT_EQ(c->jobs.compression_level, d.jobs.compression_level);
  EXPECT_EQ(c->jobs.leave_running, d.jobs.leave_running);
}

}  // namespace
}  // namespace arch
