// Group membership (ARCH_GROUP and Kubernetes pod groups) and the restore's arrival markers.
#include "container/group_checkpoint.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "base/temp_dir.h"
#include "container/deadline_plan.h"
#include "managed/container_registry.h"
#include "store/checkpoint_store.h"

namespace arch {
namespace {

namespace fs = std::filesystem;

struct Spec {
  std::string id;
  std::string ns = "k8s.io";
  std::string owner = "k8s.io+ml";
  std::map<std::string, std::string> env;
  std::map<std::string, std::string> annotations;
};

// A pod's application container as containerd's CRI plugin writes its spec.
Spec app(std::string id, std::string sandbox, std::string pod, std::string key = "") {
  Spec s;
  s.id = std::move(id);
  s.annotations = {{"io.kubernetes.cri.container-type", "container"},
                   {"io.kubernetes.cri.sandbox-id", std::move(sandbox)},
                   {"io.kubernetes.cri.sandbox-name", std::move(pod)},
                   {"io.kubernetes.cri.sandbox-namespace", "ml"},
                   {"io.kubernetes.cri.container-name", s.id}};
  s.env["ARCH_ENABLE"] = "1";
  if (!key.empty()) s.env["ARCH_JOB_ID"] = key;
  return s;
}

ContainerRecord bundle(const TempDir& tmp, const Spec& s) {
  std::string dir = tmp / ("b-" + s.id);
  fs::create_directories(dir);
  nlohmann::json env = nlohmann::json::array();
  for (const auto& [k, v] : s.env) env.push_back(k + "=" + v);
  nlohmann::json spec = {{"ociVersion", "1.0.2"},
                         {"process", {{"args", {"sh"}}, {"env", env}}},
                         {"root", {{"path", "rootfs"}}},
                         {"annotations", s.annotations}};
  std::ofstream(dir + "/config.json") << spec.dump();
  ContainerRecord rec;
  rec.id = s.id;
  rec.ns = s.ns;
  rec.owner = s.owner;
  rec.key = s.env.contains("ARCH_JOB_ID") ? s.env.at("ARCH_JOB_ID") : s.id;
  rec.runc_root = "/run/containerd/runc/" + s.ns;
  rec.bundle = dir;
  return rec;
}

std::vector<std::string> groups_of(const TempDir& tmp, const std::vector<Spec>& specs,
                                   const NodeConfig& config = {}) {
  std::vector<ContainerRecord> recs;
  for (const auto& s : specs) recs.push_back(bundle(tmp, s));
  std::vector<std::string> out;
  for (auto& g : effective_groups(recs, config))
    out.push_back(g ? *g : "error: " + g.error().message());
  return out;
}

TEST(PodGroups, TheAppContainersOfOnePodAreOneGroup) {
  TempDir tmp("arch-podgrp-");
  auto sandbox = app("pause", "sb1", "trainer-0");
  sandbox.annotations["io.kubernetes.cri.container-type"] = "sandbox";
  auto g = groups_of(tmp, {app("main", "sb1", "trainer-0"), app("side", "sb1", "trainer-0"),
                           app("solo", "sb2", "web-0"), sandbox});
  EXPECT_EQ(g, (std::vector<std::string>{"pod.trainer-0", "pod.trainer-0", "", ""}));
}

TEST(PodGroups, OffByTheNodeOrOutsideCriNoGroup) {
  TempDir tmp("arch-podgrp-off-");
  NodeConfig off;
  off.groups_kubernetes_pods = false;
  EXPECT_EQ(groups_of(tmp, {app("a", "sb1", "trainer-0"), app("b", "sb1", "trainer-0")}, off),
            (std::vector<std::string>{"", ""}));
}

TEST(PodGroups, AnExplicitGroupWinsAndThePodsRestIsItsGroup) {
  TempDir tmp("arch-podgrp-explicit-");
  auto own = app("own", "sb1", "trainer-0");
  own.env["ARCH_GROUP"] = "mpi";
  // "own" names its group; "a" and "b" are the pod group; "c" alone in its pod is none.
  auto g = groups_of(tmp, {own, app("a", "sb1", "trainer-0"), app("b", "sb1", "trainer-0")});
  EXPECT_EQ(g, (std::vector<std::string>{"mpi", "pod.trainer-0", "pod.trainer-0"}));
  auto lone = groups_of(tmp, {own, app("c", "sb1", "trainer-0")});
  EXPECT_EQ(lone, (std::vector<std::string>{"mpi", ""}));
}

TEST(PodGroups, GeneratedPodNamesGroupByTheMembersKeys) {
  TempDir tmp("arch-podgrp-gen-");
  // A Job's pod (generated name): the name comes from the members' keys, so the Job's next
  // pod (another generated name, another sandbox) finds the same group.
  auto first = groups_of(
      tmp, {app("a1", "sb1", "sim-x7k2q", "job-a"), app("b1", "sb1", "sim-x7k2q", "job-b")});
  auto next = groups_of(
      tmp, {app("b2", "sb9", "sim-q9z4t", "job-b"), app("a2", "sb9", "sim-q9z4t", "job-a")});
  ASSERT_EQ(first.size(), 2u);
  EXPECT_TRUE(first[0].starts_with("pod.h")) << first[0];
  EXPECT_EQ(first[0], first[1]);
  EXPECT_EQ(next, (std::vector<std::string>{first[0], first[0]}));
  EXPECT_TRUE(validate_group_name(first[0]));
}

TEST(PodGroups, AttackAContainerCannotJoinAnotherPodsGroup) {
  TempDir tmp("arch-podgrp-attack-");
  // Naming the pod group in ARCH_GROUP (the container's own environment): refused.
  auto named = app("evil", "sb2", "other-0");
  named.env["ARCH_GROUP"] = "pod.trainer-0";
  // The pod's annotations in its environment: not annotations, no effect.
  auto env_only = app("evil2", "sb2", "other-0");
  env_only.env["ARCH_io.kubernetes.cri.sandbox-id"] = "sb1";
  // CRI annotations on a container that is not CRI's (namespace "default", another owner):
  // not a pod container.
  auto foreign = app("evil3", "sb1", "trainer-0");
  foreign.ns = "default";
  foreign.owner = "default";
  // The same pod name and sandbox id under another owner (another pod namespace): its own.
  auto other_owner = app("evil4", "sb1", "trainer-0");
  other_owner.owner = "k8s.io+other";
  auto g = groups_of(tmp, {app("a", "sb1", "trainer-0"), app("b", "sb1", "trainer-0"), named,
                           env_only, foreign, other_owner});
  EXPECT_EQ(g[0], "pod.trainer-0");
  EXPECT_EQ(g[1], "pod.trainer-0");
  EXPECT_NE(g[2].find("reserved for Kubernetes pod groups"), std::string::npos) << g[2];
  EXPECT_EQ(g[3], "");
  EXPECT_EQ(g[4], "");
  EXPECT_EQ(g[5], "");
}

// ------------------------------------------------------------------ drain limits

TEST(GroupDrainLimits, AGroupIsAdmittedAsOneUnitWithTheSumOfItsMembersSizes) {
  TempDir tmp("arch-grplim-");
  NodeConfig config;
  config.state_dir = tmp.path();
  const std::string store = "/var/lib/arch/checkpoints";
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  // No measured rate: every group is admitted (nothing to predict from).
  auto limits = drain_group_limits(config, store, deadline);
  ASSERT_TRUE(limits.admit && limits.deadline);
  EXPECT_EQ(limits.admit(uint64_t{8} << 30, 2), "");
  EXPECT_GE(limits.margin, std::chrono::milliseconds(1000));
  // 100 MiB/s measured: 3 members of 400 MiB each fit one by one (12 s each would not,
  // but as one unit their sum, 1.2 GiB, is 12 s + fixed costs: within 20 s less the margin).
  ASSERT_TRUE(record_store_rates(config.state_dir, store, 100.0 * (1 << 20), 0));
  EXPECT_EQ(limits.admit(uint64_t{1200} << 20, 3), "");
  // Twice that is 24 s: the whole group is refused, not some of its members.
  auto why = limits.admit(uint64_t{2400} << 20, 3);
  EXPECT_NE(why.find("cannot finish before the deadline"), std::string::npos) << why;
  EXPECT_NE(why.find("3 members"), std::string::npos) << why;
  // A deadline already past admits nothing.
  auto gone = drain_group_limits(config, store, std::chrono::steady_clock::now());
  EXPECT_NE(gone.admit(uint64_t{1} << 20, 1), "");
}

// A member's key held by another checkpoint: the group waits for it no longer than its
// deadline allows (not the usual 60 s), and nothing is committed.
TEST(GroupDrainLimits, AHeldKeyIsWaitedForOnlyUntilTheDeadline) {
  TempDir tmp("arch-grplock-");
  NodeConfig config;
  config.state_dir = tmp / "state";
  Spec s;
  s.id = "x";
  s.ns = "default";
  s.owner = "default";
  s.env = {{"ARCH_ENABLE", "1"}, {"ARCH_GROUP", "g"}, {"ARCH_JOB_ID", "x"}};
  ContainerRecord rec = bundle(tmp, s);
  rec.store = tmp / "store";
  fs::create_directories(rec.store);
  CheckpointStore store(rec.store);
  auto held = store.lock(rec.owner, rec.key, std::chrono::seconds(1));
  ASSERT_TRUE(held) << held.error().message();
  GroupLimits limits;
  limits.deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  auto t0 = std::chrono::steady_clock::now();
  auto out = checkpoint_group(NodeGroup{"default", "g", {rec}}, config, "/bin/false", {}, limits);
  auto waited = std::chrono::steady_clock::now() - t0;
  ASSERT_FALSE(out);
  EXPECT_NE(out.error().message().find("lock"), std::string::npos) << out.error().message();
  EXPECT_LT(waited, std::chrono::seconds(20)) << "waited past the deadline for the key";
}

// ------------------------------------------------------------------ arrival markers

GroupRecord record_of(std::vector<std::string> keys) {
  GroupRecord r;
  r.owner = "default";
  r.name = "g1";
  r.generation = "0123456789abcdef";
  for (auto& k : keys) r.members.push_back({k, k, "ckpt-1", "00"});
  return r;
}

TEST(GroupMarkers, EveryMemberGoesOnTheMarkersAreSweptOnceStale) {
  TempDir tmp("arch-grpmark-");
  NodeConfig config;
  config.state_dir = tmp.path();
  auto r = record_of({"x", "y", "z"});
  std::vector<Result<void>> done(3);
  {
    std::vector<std::jthread> members;
    for (std::size_t i = 0; i < 3; ++i) {
      members.emplace_back([&, i] {
        std::this_thread::sleep_for(std::chrono::milliseconds(50 * i));
        done[i] = wait_for_group_members(config, r, r.members[i].key, std::chrono::seconds(10));
      });
    }
  }
  for (auto& d : done) EXPECT_TRUE(d) << d.error().message();
  std::string dir = tmp / "groups/default/g1/0123456789abcdef";
  ASSERT_TRUE(fs::exists(dir + "/z"));
  EXPECT_EQ(sweep_group_markers(config, std::chrono::seconds(120)), 0u);  // fresh: kept
  struct timespec old[2] = {{::time(nullptr) - 600, 0}, {::time(nullptr) - 600, 0}};
  for (const char* f : {"/x", "/y", "/z", ""}) {
    ASSERT_EQ(::utimensat(AT_FDCWD, (dir + f).c_str(), old, 0), 0);
  }
  EXPECT_EQ(sweep_group_markers(config, std::chrono::seconds(120)), 1u);
  EXPECT_FALSE(fs::exists(tmp / "groups/default")) << "markers left behind";
}

TEST(GroupMarkers, AMemberThatGivesUpRemovesItsMarker) {
  TempDir tmp("arch-grpmark-alone-");
  NodeConfig config;
  config.state_dir = tmp.path();
  auto r = record_of({"x", "y"});
  auto done = wait_for_group_members(config, r, "x", std::chrono::milliseconds(100));
  ASSERT_FALSE(done);
  EXPECT_NE(done.error().message().find("y"), std::string::npos);
  EXPECT_FALSE(fs::exists(tmp / "groups/default/g1/0123456789abcdef/x"));
  EXPECT_FALSE(fs::exists(tmp / "groups/default"));
}

TEST(GroupMarkers, StaleDirectoriesAreSweptFreshOnesKept) {
  TempDir tmp("arch-grpmark-stale-");
  NodeConfig config;
  config.state_dir = tmp.path();
  std::string stale = tmp / "groups/default/old/gen1", fresh = tmp / "groups/default/new/gen2";
  fs::create_directories(stale);
  fs::create_directories(fresh);
  std::ofstream(stale + "/x") << "";
  std::ofstream(fresh + "/y") << "";
  // A restore that died an hour ago.
  struct timespec old[2] = {{::time(nullptr) - 3600, 0}, {::time(nullptr) - 3600, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, (stale + "/x").c_str(), old, 0), 0);
  ASSERT_EQ(::utimensat(AT_FDCWD, stale.c_str(), old, 0), 0);
  EXPECT_EQ(sweep_group_markers(config, std::chrono::seconds(120)), 1u);
  EXPECT_FALSE(fs::exists(tmp / "groups/default/old"));
  EXPECT_TRUE(fs::exists(fresh + "/y"));
}

TEST(GroupRestore, TheMembersAlreadyRestoredFromAGenerationAreNamed) {
  TempDir tmp("arch-grp-restored-");
  NodeConfig config;
  config.state_dir = tmp.path();
  ContainerRegistry reg(config.state_dir);
  auto r = record_of({"x", "y", "z"});
  auto rec = [&](const std::string& id, const std::string& owner) {
    ContainerRecord c;
    c.id = id;
    c.key = id;
    c.ns = "default";
    c.owner = owner;
    c.runc_root = "/run/r";
    c.bundle = "/b/" + id;
    EXPECT_TRUE(reg.record(c));
    return c;
  };
  rec("x", "default");  // restored from this generation
  rec("y", "default");  // the one that failed
  rec("z", "default");  // restored from another generation
  rec("w", "default");  // not a member
  ASSERT_TRUE(reg.record_restore("/run/r", "x", {"/store/default/x/ckpt-1", 1, 1}));
  ASSERT_TRUE(reg.record_restore("/run/r", "y", {"/store/default/y/ckpt-1", 1, 1}));
  ASSERT_TRUE(reg.record_restore("/run/r", "z", {"/store/default/z/ckpt-0", 1, 1}));
  ASSERT_TRUE(reg.record_restore("/run/r", "w", {"/store/default/w/ckpt-1", 1, 1}));
  auto peers = restored_from_group_generation(config, r, "y");
  ASSERT_EQ(peers.size(), 1u);
  EXPECT_EQ(peers[0].id, "x");
}

TEST(GroupRestore, APodMemberRestartedAloneIsNotRestoredFromTheGroup) {
  TempDir tmp("arch-grp-podrestart-");
  NodeConfig config;
  config.state_dir = tmp.path();
  ContainerRegistry reg(config.state_dir);
  auto r = record_of({"x", "y", "z"});
  auto add = [&](const std::string& id) {
    ContainerRecord c;
    c.id = id;
    c.key = id;
    c.ns = "k8s.io";
    c.owner = "default";
    c.runc_root = "/run/r";
    c.bundle = "/b/" + id;
    EXPECT_TRUE(reg.record(c));
  };
  // The pod being re-created: x is the first, nothing else there yet.
  EXPECT_EQ(pod_member_restore_refusal(config, r, "x", std::chrono::seconds(60)), "");
  // x restored from this generation just now: y goes on.
  add("x");
  ASSERT_TRUE(reg.record_restore("/run/r", "x", {"/store/default/x/ckpt-1", 1, 1}));
  EXPECT_EQ(pod_member_restore_refusal(config, r, "y", std::chrono::seconds(60)), "");
  // ... restored long ago (y restarted alone later): refused.
  struct timespec old[2] = {{::time(nullptr) - 3600, 0}, {::time(nullptr) - 3600, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, reg.path_for("/run/r", "x", ".restore.json").c_str(), old, 0), 0);
  auto late = pod_member_restore_refusal(config, r, "y", std::chrono::seconds(60));
  EXPECT_NE(late.find("restarted alone"), std::string::npos) << late;
  // z runs fresh (no restore from this generation): y would mix generations.
  ASSERT_TRUE(reg.record_restore("/run/r", "x", {"/store/default/x/ckpt-1", 1, 1}));
  add("z");
  auto mixed = pod_member_restore_refusal(config, r, "y", std::chrono::seconds(60));
  EXPECT_NE(mixed.find("not restored from generation"), std::string::npos) << mixed;
}

}  // namespace
}  // namespace arch
