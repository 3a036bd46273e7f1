// Tests for archd's persistent state: round trip, older and newer formats, atomic save.
#include "node_state.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "base/file_util.h"
#include "base/temp_dir.h"

namespace arch::agent {
namespace {

NodeState sample_state() {
  NodeState s;
  s.draining = true;
  s.drain_kind = DrainKind::kNotice;
  s.drain_reason = "spot notice: terminate at 2026-11-21T23:59:00Z";
  s.draining_since = 1700000000;
  s.last_notice = NoticeRecord{"spot", "terminate", "2026-11-21T23:59:00Z", 1700000001};
  s.next_drain_id = 3;
  DrainRecord d;
  d.id = 2;
  d.kind = DrainKind::kNotice;
  d.reason = s.drain_reason;
  d.requested = 1700000001;
  d.deadline_seconds = 95;
  d.state = "done";
  d.total = 2;
  d.done = 2;
  d.report = {{"total_seconds", 3.5}, {"containers", nlohmann::json::array()}};
  s.add_drain(d);
  s.counters.checkpoints["drain"].count(true, 1.2, 1 << 20);
  s.counters.checkpoints["drain"].count(true, 0.2, 0);
  s.counters.checkpoints["on_stop"].count(false, 3, 0);
  s.counters.restores["create"].count(true, 0.5, 4096);
  s.counters.notices["spot"] = 1;
  s.activity = {.started = true, .dev = 7, .ino = 99, .offset = 1234, .head = "{\"v\xff\x01"};
  s.seen_restores = {"default/a@12"};
  s.seen_quarantined = {"/store/default/a/failed-20261121T000000Z"};
  s.stores = {"/store"};
  return s;
}

TEST(NodeState, RoundTripsThroughTheFile) {
  TempDir tmp("arch-state-");
  std::string dir = tmp.path();
  std::string path = dir + "/agent/state.json";
  NodeState s = sample_state();
  ASSERT_TRUE(save_node_state(path, s));
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat((dir + "/agent").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);

  auto loaded = load_node_state(path);
  ASSERT_TRUE(loaded) << loaded.error().message();
  EXPECT_EQ(*loaded, s);
}

TEST(NodeState, MissingFileIsAFreshState) {
  TempDir tmp("arch-state-missing-");
  auto loaded = load_node_state(tmp / "state.json");
  ASSERT_TRUE(loaded);
  EXPECT_FALSE(loaded->draining);
  EXPECT_EQ(loaded->next_drain_id, 1);
}

TEST(NodeState, RefusesANewerFormatAndReadsAnOlderOne) {
  auto newer = parse_node_state(R"({"version": 99, "draining": true})");
  ASSERT_FALSE(newer);
  EXPECT_NE(newer.error().message().find("newer"), std::string::npos);
  auto older = parse_node_state(R"({"draining": true, "drain_reason": "maintenance"})");
  ASSERT_TRUE(older) << older.error().message();
  EXPECT_TRUE(older->draining);
  EXPECT_EQ(older->drain_reason, "maintenance");
  EXPECT_FALSE(parse_node_state("not json"));
  EXPECT_FALSE(parse_node_state(R"({"draining": "yes"})"));
}

TEST(NodeState, KeepsOnlyTheLastDrains) {
  NodeState s;
  for (int i = 1; i <= 15; ++i) s.add_drain({.id = i});
  ASSERT_EQ(s.drains.size(), kMaxDrains);
  EXPECT_EQ(s.drains.front().id, 6);
  EXPECT_NE(s.find_drain(15), nullptr);
  EXPECT_EQ(s.find_drain(1), nullptr);
}

TEST(NodeState, ReadsTheCountersOfAnOlderArchd) {
  auto s = parse_node_state(R"({"version":1,"counters":{"checkpoints_ok":3,"checkpoints_failed":1,
      "checkpoint_bytes":100,"restores_ok":2,"restores_failed":1,"restore_bytes":50,
      "checkpoint_seconds":{"sum":4.5,"count":4}}})");
  ASSERT_TRUE(s) << s.error().message();
  const auto& d = s->counters.checkpoints.at("drain");
  EXPECT_EQ(d.ok, 3u);
  EXPECT_EQ(d.failed, 1u);
  EXPECT_EQ(d.bytes, 100u);
  EXPECT_EQ(d.seconds.count, 4u);
  EXPECT_EQ(s->counters.restores.at("create").ok, 2u);
  EXPECT_EQ(s->counters.restores.at("create").bytes, 50u);
  EXPECT_FALSE(s->activity.started);  // a fresh cursor: the activity log is read from its end
}

}  // namespace
}  // namespace arch::agent
