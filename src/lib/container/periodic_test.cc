#include "container/periodic.h"

#include <gtest/gtest.h>

namespace arch {
namespace {

using std::chrono::seconds;

TEST(Periodic, IntervalFromTheContainerWithinTheNodesBounds) {
  NodeConfig node;
  node.checkpoint.min_interval = seconds(60);
  EXPECT_EQ(checkpoint_interval(node, "")->every, seconds(0));  // node default: off
  EXPECT_EQ(checkpoint_interval(node, "15m")->every, seconds(900));
  EXPECT_EQ(checkpoint_interval(node, "off")->every, seconds(0));
  auto raised = checkpoint_interval(node, "5s");
  ASSERT_TRUE(raised);
  EXPECT_EQ(raised->every, seconds(60));
  EXPECT_NE(raised->note.find("min_interval"), std::string::npos);
  node.checkpoint.interval = seconds(600);
  EXPECT_EQ(checkpoint_interval(node, "")->every, seconds(600));
  EXPECT_EQ(checkpoint_interval(node, "off")->every, seconds(0));  // a container opts out
}

TEST(Periodic, AttackNodeThatDeniesContainerIntervalsKeepsItsOwn) {
  // A tenant asks for checkpoints as often as the node allows (or on a node that has them
  // off): with container_interval = deny only the node's interval applies; "off" still
  // lets a container opt out.
  NodeConfig node;
  node.checkpoint.min_interval = seconds(60);
  node.checkpoint.container_interval = false;
  auto ignored = checkpoint_interval(node, "1m");
  ASSERT_TRUE(ignored);
  EXPECT_EQ(ignored->every, seconds(0));
  EXPECT_NE(ignored->note.find("container_interval = deny"), std::string::npos) << ignored->note;
  node.checkpoint.interval = seconds(3600);
  EXPECT_EQ(checkpoint_interval(node, "1m")->every, seconds(3600));
  EXPECT_EQ(checkpoint_interval(node, "")->every, seconds(3600));
  EXPECT_EQ(checkpoint_interval(node, "off")->every, seconds(0));
  EXPECT_FALSE(parse_node_config("[checkpoint]\ncontainer_interval = maybe\n"));
  EXPECT_FALSE(parse_node_config("[checkpoint]\ncontainer_interval = deny\n")
                   ->checkpoint.container_interval);
}

TEST(Periodic, MalformedIntervalsAreRefused) {
  NodeConfig node;
  for (const char* bad : {"0", "-5m", "soon", "1s;rm -rf /", "5 m", "99999999999999999999d",
                          "1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h"}) {
    EXPECT_FALSE(checkpoint_interval(node, bad)) << bad;
  }
}

TEST(Periodic, NodeConfigKeys) {
  auto c = parse_node_config("[checkpoint]\ninterval = 30m\nmin_interval = 10s\n");
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->checkpoint.interval, seconds(1800));
  EXPECT_EQ(c->checkpoint.min_interval, seconds(10));
  EXPECT_EQ(parse_node_config("[checkpoint]\ninterval = off\n")->checkpoint.interval, seconds(0));
  EXPECT_FALSE(parse_node_config("[checkpoint]\ninterval = 0\n"));
  EXPECT_FALSE(parse_node_config("[checkpoint]\nmin_interval = off\n"));
}

TEST(Periodic, AGroupGoesOnTheSmallestOfItsMembersIntervals) {
  auto every = [](int s) { return CheckpointInterval{seconds(s), ""}; };
  EXPECT_EQ(group_checkpoint_interval({every(600), every(0), every(120)}).every, seconds(120));
  EXPECT_EQ(group_checkpoint_interval({every(0), every(300)}).every, seconds(300));
  EXPECT_EQ(group_checkpoint_interval({every(0), every(0)}).every, seconds(0));  // all off
  EXPECT_EQ(group_checkpoint_interval({}).every, seconds(0));
}

}  // namespace
}  // namespace arch
