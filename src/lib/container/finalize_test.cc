// Tests for finalize: the worker pool, the deadline, cancellation, the report and the choice
// of running containers (with a fake runc).
#include "container/finalize.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "base/temp_dir.h"

namespace arch {
namespace {

ContainerRecord record(const std::string& id) {
  return {id, "default", id, "/run/test-root", "/b/" + id, "/store", "", 1};
}

std::vector<ContainerRecord> records(int n) {
  std::vector<ContainerRecord> out;
  for (int i = 0; i < n; ++i) out.push_back(record("c" + std::to_string(i)));
  return out;
}

TEST(Finalize, CheckpointsEveryContainerInParallelKeepingOrder) {
  std::atomic<int> running{0}, peak{0};
  FinalizeOptions options;
  options.parallel = 3;
  options.checkpoint = [&](const ContainerRecord& rec) -> Result<CheckpointOutcome> {
    int now = ++running;
    int seen = peak.load();
    while (now > seen && !peak.compare_exchange_weak(seen, now)) {
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    --running;
    return CheckpointOutcome{"/store/default/" + rec.id + "/ckpt-1", {{"total", 30}}, 100};
  };
  std::size_t started_with = 0;
  int results = 0;
  options.on_start = [&](const std::vector<ContainerRecord>& c) { started_with = c.size(); };
  options.on_result = [&](const FinalizeResult&) { ++results; };

  auto report =
      finalize_containers(records(7), {}, "/bin/false", options, std::chrono::steady_clock::now());
  EXPECT_EQ(started_with, 7u);
  EXPECT_EQ(results, 7);
  ASSERT_EQ(report.containers.size(), 7u);
  for (int i = 0; i < 7; ++i) {
    const auto& r = report.containers[static_cast<std::size_t>(i)];
    EXPECT_EQ(r.container.id, "c" + std::to_string(i));
    EXPECT_EQ(r.outcome, FinalizeOutcome::kCheckpointed);
    EXPECT_EQ(r.detail, "/store/default/c" + std::to_string(i) + "/ckpt-1");
    EXPECT_EQ(r.bytes, 100u);
  }
  EXPECT_EQ(report.not_checkpointed(), 0u);
  EXPECT_GT(peak.load(), 1);
  EXPECT_LE(peak.load(), 3);
}

TEST(Finalize, SkipsContainersOnceTheDeadlinePassed) {
  int calls = 0;
  FinalizeOptions options;
  options.deadline_seconds = 0;
  options.checkpoint = [&](const ContainerRecord&) -> Result<CheckpointOutcome> {
    ++calls;
    return CheckpointOutcome{};
  };
  auto report =
      finalize_containers(records(3), {}, "/bin/false", options, std::chrono::steady_clock::now());
  EXPECT_EQ(calls, 0);
  EXPECT_EQ(report.not_checkpointed(), 3u);
  for (const auto& r : report.containers) {
    EXPECT_EQ(r.outcome, FinalizeOutcome::kSkipped);
    EXPECT_EQ(r.detail, "deadline reached before it could start");
  }
}

TEST(Finalize, CancelSkipsWhatHasNotStarted) {
  std::atomic<bool> cancel{false};
  FinalizeOptions options;
  options.parallel = 1;
  options.cancel = &cancel;
  options.checkpoint = [&](const ContainerRecord&) -> Result<CheckpointOutcome> {
    cancel = true;  // the first one asks to stop the rest
    return CheckpointOutcome{"/x", {}, 0};
  };
  auto report =
      finalize_containers(records(3), {}, "/bin/false", options, std::chrono::steady_clock::now());
  EXPECT_EQ(report.containers[0].outcome, FinalizeOutcome::kCheckpointed);
  EXPECT_EQ(report.containers[1].outcome, FinalizeOutcome::kSkipped);
  EXPECT_EQ(report.containers[2].detail, "cancelled before it could start");
}

TEST(Finalize, FailuresAreReportedWithTheirMessage) {
  FinalizeOptions options;
  options.checkpoint = [](const ContainerRecord& rec) -> Result<CheckpointOutcome> {
    if (rec.id == "c1") return fail("dump: criu failed");
    return CheckpointOutcome{"/ok", {}, 0};
  };
  auto report =
      finalize_containers(records(2), {}, "/bin/false", options, std::chrono::steady_clock::now());
  EXPECT_EQ(report.not_checkpointed(), 1u);
  EXPECT_EQ(report.containers[1].outcome, FinalizeOutcome::kFailed);
  EXPECT_EQ(report.containers[1].detail, "dump: criu failed");

  auto json = finalize_report_json(report);
  ASSERT_EQ(json["containers"].size(), 2u);
  EXPECT_EQ(json["containers"][0]["result"], "checkpointed");
  EXPECT_EQ(json["containers"][1]["result"], "failed");
  EXPECT_EQ(json["containers"][1]["namespace"], "default");
  EXPECT_EQ(json["containers"][1]["id"], "c1");
  EXPECT_EQ(json["containers"][1]["detail"], "dump: criu failed");
  EXPECT_TRUE(json["containers"][1]["seconds"].is_number());
  EXPECT_TRUE(json["total_seconds"].is_number());
}

TEST(Finalize, NotesAndPreCopyReachTheReport) {
  FinalizeOptions options;
  options.checkpoint = [](const ContainerRecord&) -> Result<CheckpointOutcome> {
    CheckpointOutcome out{"/ok", {{"dump", 12.5}}, 0};
    out.notes = {"pre-copy not used: no soft-dirty; plain dump"};
    out.pre_copy = "unavailable";
    return out;
  };
  auto report =
      finalize_containers(records(1), {}, "/bin/false", options, std::chrono::steady_clock::now());
  EXPECT_EQ(report.parallel, default_finalize_parallel()) << "parallel 0 means the default";
  auto json = finalize_report_json(report);
  EXPECT_EQ(json["parallel"], default_finalize_parallel());
  EXPECT_EQ(json["containers"][0]["pre_copy"], "unavailable");
  EXPECT_EQ(json["containers"][0]["notes"][0], "pre-copy not used: no soft-dirty; plain dump");
  EXPECT_EQ(json["containers"][0]["timings_ms"]["dump"], 12.5);
}

TEST(Finalize, PreCopyModesAndDefaultParallel) {
  EXPECT_EQ(parse_pre_copy_mode("on"), PreCopyMode::kOn);
  EXPECT_EQ(parse_pre_copy_mode("off"), PreCopyMode::kOff);
  EXPECT_EQ(parse_pre_copy_mode("auto"), PreCopyMode::kAuto);
  auto bad = parse_pre_copy_mode("yes");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("off, on or auto"), std::string::npos);
  int cpus = static_cast<int>(std::thread::hardware_concurrency());
  EXPECT_EQ(default_finalize_parallel(), std::clamp(2 * std::max(cpus, 1), 2, 32));
}

TEST(Finalize, NoContainersIsAnEmptyReport) {
  auto report = finalize_containers({}, {}, "/bin/false", {}, std::chrono::steady_clock::now());
  EXPECT_TRUE(report.containers.empty());
  EXPECT_EQ(report.not_checkpointed(), 0u);
}

TEST(Finalize, ChoosesOnlyRunningContainers) {
  TempDir tmp("arch-fin-");
  std::filesystem::path dir = tmp.path();
  // A runc whose `state ID` says running for "up", paused for "frozen", and fails otherwise.
  std::string runc = (dir / "runc").string();
  {
    std::ofstream f(runc);
    f << "#!/bin/sh\nfor a; do id=$a; done\n"
         "case $id in up) s=running;; frozen) s=paused;; *) exit 1;; esac\n"
         "printf '{\"id\":\"%s\",\"status\":\"%s\",\"pid\":1,\"bundle\":\"/b\"}' $id $s\n";
  }
  ::chmod(runc.c_str(), 0755);
  NodeConfig config;
  config.state_dir = (dir / "state").string();
  ContainerRegistry reg(config.state_dir);
  for (const char* id : {"up", "frozen", "gone"}) ASSERT_TRUE(reg.record(record(id)));

  auto running = running_containers(config, runc);
  ASSERT_EQ(running.size(), 1u);
  EXPECT_EQ(running[0].id, "up");

  FinalizeOptions options;
  options.checkpoint = [](const ContainerRecord&) -> Result<CheckpointOutcome> {
    return CheckpointOutcome{"/ok", {}, 0};
  };
  auto report = finalize_node(config, runc, options);
  ASSERT_EQ(report.containers.size(), 1u);
  EXPECT_EQ(report.containers[0].container.id, "up");
}

TEST(Finalize, OneRuncListPerRootInsteadOfAStatePerContainer) {
  TempDir tmp("arch-fin-list-");
  std::filesystem::path dir = tmp.path();
  // `list` answers for every container; `state` fails (and would show in the call log).
  std::string runc = (dir / "runc").string();
  std::string calls = (dir / "calls").string();
  {
    std::ofstream f(runc);
    f << "#!/bin/sh\necho \"$*\" >> " << calls << "\n"
      << "case \"$*\" in *' list --format json') ;; *) exit 1;; esac\n"
         "echo '[{\"id\":\"up\",\"status\":\"running\",\"pid\":7,\"bundle\":\"/b\"},"
         "{\"id\":\"frozen\",\"status\":\"paused\",\"pid\":8,\"bundle\":\"/b\"},"
         "{\"id\":\"up2\",\"status\":\"running\",\"pid\":9,\"bundle\":\"/b\"}]'\n";
  }
  ::chmod(runc.c_str(), 0755);
  NodeConfig config;
  config.state_dir = (dir / "state").string();
  ContainerRegistry reg(config.state_dir);
  for (const char* id : {"up", "frozen", "up2"}) ASSERT_TRUE(reg.record(record(id)));

  auto running = running_containers(config, runc);
  std::vector<std::string> ids;
  for (const auto& r : running) ids.push_back(r.id);
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(ids, (std::vector<std::string>{"up", "up2"}));
  std::ifstream log(calls);
  std::string line;
  int n = 0;
  while (std::getline(log, line)) ++n;
  EXPECT_EQ(n, 1) << "expected a single runc list for the one runc root";
}

}  // namespace
}  // namespace arch
