// Tests for the Agent with a fake runc: drains persisted and resumed across restarts, the
// draining flag, notices (once each), undrain, conflicts, metrics.
#include "agent.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "base/file_util.h"
#include "base/temp_dir.h"
#include "managed/activity_log.h"
#include "managed/container_registry.h"
#include "private_dir.h"

namespace arch::agent {
namespace {

using namespace std::chrono_literals;

class AgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = tmp_.path();
    config_.state_dir = dir_ + "/state";
    config_.store_path = dir_ + "/store";
    config_.agent.state_file = dir_ + "/agent/state.json";
    config_.agent.event_log = dir_ + "/log/events.jsonl";
    config_.agent.imds_endpoint = "";
    // `state ID` sleeps for a "slow" container and fails: nothing is ever running.
    runc_ = dir_ + "/runc";
    std::ofstream(runc_) << "#!/bin/sh\nfor a; do id=$a; done\n"
                            "[ \"$id\" = slow ] && sleep 1\nexit 1\n";
    ::chmod(runc_.c_str(), 0755);
  }

  std::unique_ptr<Agent> make_agent() {
    return std::make_unique<Agent>(config_, runc_, [](LogLevel, const std::string&) {});
  }
  bool flag_exists() const { return ::access(draining_flag(config_).c_str(), F_OK) == 0; }

  // Waits until the last drain has finished; returns the status.
  static nlohmann::json wait_drained(Agent& agent) {
    for (int i = 0; i < 200; ++i) {
      auto st = agent.status();
      if (!st["drain_running"].get<bool>()) return st;
      std::this_thread::sleep_for(20ms);
    }
    ADD_FAILURE() << "drain did not finish";
    return agent.status();
  }

  TempDir tmp_{"arch-agent-"};
  std::string dir_, runc_;
  NodeConfig config_;
};

TEST_F(AgentTest, DrainIsPersistedFlaggedAndSurvivesARestart) {
  {
    auto agent = make_agent();
    ASSERT_TRUE(agent->start());
    auto d = agent->drain({DrainKind::kManual, "maintenance", 30});
    ASSERT_TRUE(d) << d.error().message();
    EXPECT_EQ(d->id, 1);
    EXPECT_TRUE(flag_exists());
    auto st = wait_drained(*agent);
    EXPECT_TRUE(st["draining"]);
    EXPECT_EQ(st["drain_reason"], "maintenance");
    EXPECT_EQ(st["drain"]["state"], "done");
    EXPECT_EQ(st["drain"]["report"]["containers"].size(), 0u);
    agent->stop();
  }
  ::unlink(draining_flag(config_).c_str());  // tmpfs emptied by a reboot
  auto agent = make_agent();
  ASSERT_TRUE(agent->start());
  EXPECT_TRUE(flag_exists()) << "archd re-asserts the flag at start";
  auto st = agent->status();
  EXPECT_TRUE(st["draining"]);
  EXPECT_EQ(st["drain_kind"], "manual");
  EXPECT_EQ(st["drain"]["id"], 1);
  EXPECT_NE(agent->metrics().find("arch_notices_total{kind=\"manual\"} 1\n"), std::string::npos);

  auto out = agent->undrain();
  EXPECT_EQ(out["was_draining"], true);
  EXPECT_FALSE(flag_exists());
  EXPECT_FALSE(agent->status()["draining"]);
  EXPECT_NE(agent->metrics().find("arch_node_draining 0\n"), std::string::npos);
  auto events = agent->events(0, 100)["events"];
  std::vector<std::string> kinds;
  for (const auto& e : events) kinds.push_back(e["kind"]);
  EXPECT_NE(std::find(kinds.begin(), kinds.end(), "undrain"), kinds.end());
  EXPECT_NE(std::find(kinds.begin(), kinds.end(), "drain"), kinds.end());
}

TEST_F(AgentTest, ASecondDrainWhileOneRunsIsAConflict) {
  ContainerRegistry reg(config_.state_dir);
  ASSERT_TRUE(reg.record({"slow", "default", "slow", dir_ + "/root", "/b", "/s", "", 1}));
  auto agent = make_agent();
  ASSERT_TRUE(agent->start());
  ASSERT_TRUE(agent->drain({DrainKind::kManual, "one", 30}));
  auto second = agent->drain({DrainKind::kManual, "two", 30});
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().kind(), ErrorKind::kConflict);
  EXPECT_FALSE(agent->drain({DrainKind::kManual, "bad", 0}));
  wait_drained(*agent);
  EXPECT_TRUE(agent->drain({DrainKind::kManual, "three", 30}));
}

TEST_F(AgentTest, AnInterruptedDrainResumesWithWhatIsLeftOfItsDeadline) {
  NodeState s;
  s.draining = true;
  s.drain_reason = "maintenance";
  s.draining_since = static_cast<long>(std::time(nullptr)) - 10;
  s.next_drain_id = 5;
  s.add_drain({.id = 4,
               .reason = "maintenance",
               .requested = s.draining_since,
               .deadline_seconds = 100,
               .state = "running"});
  ASSERT_TRUE(save_node_state(config_.agent.state_file, s));
  auto agent = make_agent();
  ASSERT_TRUE(agent->start());
  auto st = wait_drained(*agent);
  EXPECT_EQ(st["drain"]["id"], 5);
  EXPECT_EQ(st["drain"]["resumed_from"], 4);
  EXPECT_LE(st["drain"]["deadline_seconds"].get<double>(), 90.0);
  EXPECT_GE(st["drain"]["deadline_seconds"].get<double>(), 85.0);
  auto saved = load_node_state(config_.agent.state_file);
  ASSERT_TRUE(saved);
  EXPECT_EQ(saved->find_drain(4)->state, "interrupted");
}

TEST_F(AgentTest, ASpotNoticeDrainsOnceAndARebalanceIsOnlyRecorded) {
  auto agent = make_agent();
  ASSERT_TRUE(agent->start());
  Notice rebalance{Notice::Kind::kRebalance, "rebalance", "2026-11-21T23:50:00Z", {}, {}};
  agent->on_notice(rebalance);
  EXPECT_FALSE(agent->status()["draining"]);
  EXPECT_EQ(agent->status()["watcher"]["last_notice"]["kind"], "rebalance");

  Notice spot{Notice::Kind::kSpot,
              "terminate",
              "2026-11-21T23:59:00Z",
              std::chrono::system_clock::now() + 120s,
              {}};
  agent->on_notice(spot);
  agent->on_notice(spot);  // the next poll sees it again
  auto st = wait_drained(*agent);
  EXPECT_TRUE(st["draining"]);
  EXPECT_EQ(st["drain_kind"], "notice");
  EXPECT_EQ(st["drain"]["id"], 1);
  EXPECT_NEAR(st["drain"]["deadline_seconds"].get<double>(), 105, 2);
  std::string m = agent->metrics();
  EXPECT_NE(m.find("arch_notices_total{kind=\"spot\"} 1\n"), std::string::npos) << m;
  EXPECT_NE(m.find("arch_notices_total{kind=\"rebalance\"} 1\n"), std::string::npos) << m;
}

TEST_F(AgentTest, CountsTheActivityLogOnceAcrossARestart) {
  ASSERT_TRUE(make_private_dirs(config_.state_dir));
  ActivityRecord before{.what = "checkpoint", .source = "archctl", .outcome = "ok", .id = "old"};
  ASSERT_TRUE(append_activity(config_.state_dir, before));  // before archd ever ran: not counted
  auto has = [](const std::string& m, const std::string& line) {
    return m.find(line + "\n") != std::string::npos;
  };
  {
    auto agent = make_agent();
    ASSERT_TRUE(agent->start());
    agent->refresh();
    ASSERT_TRUE(append_activity(config_.state_dir, {.what = "checkpoint",
                                                    .source = "archctl",
                                                    .outcome = "ok",
                                                    .ns = "default",
                                                    .id = "c1",
                                                    .ms = 1500,
                                                    .bytes = 4096,
                                                    .detail = "/store/default/c1/ckpt-1"}));
    ASSERT_TRUE(append_activity(config_.state_dir, {.what = "checkpoint",
                                                    .source = "on_stop",
                                                    .outcome = "failed",
                                                    .id = "c2",
                                                    .detail = "criu said no"}));
    ASSERT_TRUE(append_activity(
        config_.state_dir, {.what = "restore", .source = "create", .outcome = "ok", .id = "c3"}));
    // A source archd does not take from the log (its own) or does not know: not counted.
    ASSERT_TRUE(append_activity(config_.state_dir,
                                {.what = "checkpoint", .source = "drain", .outcome = "ok"}));
    ASSERT_TRUE(append_activity(config_.state_dir,
                                {.what = "restore", .source = "hacker", .outcome = "ok"}));
    std::string m = agent->metrics();
    EXPECT_TRUE(has(m, R"(arch_checkpoints_total{source="archctl",outcome="ok"} 1)")) << m;
    EXPECT_TRUE(has(m, R"(arch_checkpoints_total{source="on_stop",outcome="failed"} 1)")) << m;
    EXPECT_TRUE(has(m, R"(arch_checkpoints_total{source="drain",outcome="ok"} 0)")) << m;
    EXPECT_TRUE(has(m, R"(arch_checkpoint_bytes_total{source="archctl"} 4096)")) << m;
    EXPECT_TRUE(has(m, R"(arch_checkpoint_duration_seconds_sum{source="archctl"} 1.5)")) << m;
    EXPECT_TRUE(has(m, R"(arch_restores_total{source="create",outcome="ok"} 1)")) << m;
    EXPECT_TRUE(has(m, "arch_activity_invalid_records_total 2")) << m;
    EXPECT_EQ(m.find("hacker"), std::string::npos);
    auto events = agent->events(0, 100)["events"];
    bool seen = false;
    for (const auto& e : events) {
      seen |= e["kind"] == "checkpoint" && e["id"] == "c1" &&
              e["detail"] == "by archctl: /store/default/c1/ckpt-1";
    }
    EXPECT_TRUE(seen) << events.dump();
    agent->stop();
  }
  ASSERT_TRUE(append_activity(
      config_.state_dir,
      {.what = "checkpoint", .source = "archctl", .outcome = "ok", .id = "while-stopped"}));
  auto agent = make_agent();
  ASSERT_TRUE(agent->start());
  std::string m = agent->metrics();
  EXPECT_TRUE(has(m, R"(arch_checkpoints_total{source="archctl",outcome="ok"} 2)")) << m;
  EXPECT_TRUE(has(m, R"(arch_restores_total{source="create",outcome="ok"} 1)")) << m;
}

TEST_F(AgentTest, CountsJobAndPeriodicCheckpointsFromTheirEvents) {
  auto agent = make_agent();
  ASSERT_TRUE(agent->start());
  agent->record_event({.kind = "job", .id = "j1", .outcome = "checkpointed", .duration_ms = 200});
  agent->record_event({.kind = "job", .id = "j1", .outcome = "restore-failed"});
  agent->record_event({.kind = "job", .id = "j1", .outcome = "exited"});
  agent->record_periodic({.kind = "checkpoint", .id = "c1", .outcome = "periodic"}, 4096);
  agent->record_periodic({.kind = "checkpoint", .id = "c1", .outcome = "periodic-interval"}, 0);
  std::string m = agent->metrics();
  EXPECT_NE(m.find(R"(arch_checkpoints_total{source="job",outcome="ok"} 1)"), std::string::npos);
  EXPECT_NE(m.find(R"(arch_restores_total{source="job",outcome="failed"} 1)"), std::string::npos);
  EXPECT_NE(m.find(R"(arch_restores_total{source="job",outcome="ok"} 0)"), std::string::npos);
  EXPECT_NE(m.find(R"(arch_checkpoints_total{source="periodic",outcome="ok"} 1)"),
            std::string::npos);
  EXPECT_NE(m.find(R"(arch_checkpoints_total{source="periodic",outcome="failed"} 0)"),
            std::string::npos);
  EXPECT_NE(m.find(R"(arch_checkpoint_bytes_total{source="periodic"} 4096)"), std::string::npos);
}

TEST_F(AgentTest, ReportsTheWatchersHealth) {
  config_.agent.imds_endpoint = "http://127.0.0.1:9";
  auto agent = make_agent();
  ASSERT_TRUE(agent->start());
  agent->on_watcher_poll(false, "refused");
  agent->on_watcher_poll(false, "refused");
  std::string m = agent->metrics();
  EXPECT_NE(m.find("arch_notice_watcher_enabled 1\n"), std::string::npos) << m;
  EXPECT_NE(m.find("arch_notice_watcher_consecutive_errors 2\n"), std::string::npos) << m;
  EXPECT_NE(m.find("arch_notice_watcher_last_success_timestamp_seconds 0\n"), std::string::npos);
  agent->on_watcher_poll(true, "");
  m = agent->metrics();
  EXPECT_NE(m.find("arch_notice_watcher_consecutive_errors 0\n"), std::string::npos) << m;
  EXPECT_EQ(m.find("arch_notice_watcher_last_success_timestamp_seconds 0\n"), std::string::npos);
}

TEST(NoticeDeadline, IsTheNoticeTimeLessTheMarginClamped) {
  auto now = std::chrono::system_clock::now();
  Notice n{Notice::Kind::kSpot, "terminate", "t", now + 120s, {}};
  EXPECT_DOUBLE_EQ(notice_deadline_seconds(n, now, 15), 105);
  n.time = now + 10s;
  EXPECT_DOUBLE_EQ(notice_deadline_seconds(n, now, 15), 5);
  n.time = now + 3600s;
  EXPECT_DOUBLE_EQ(notice_deadline_seconds(n, now, 15), 300);
  n.time = {};
  EXPECT_DOUBLE_EQ(notice_deadline_seconds(n, now, 15), 105);
}

}  // namespace
}  // namespace arch::agent
