// Tests for SharedMode: the spec edit, the work directory, the mount point in the rootfs.
#include "managed/shared_mode.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "managed/store_layout.h"
#include "runtime/oci_spec.h"

namespace arch {
namespace {

namespace fs = std::filesystem;

ArchEnv shared_env(const std::string& shared, const std::string& inside) {
  ArchEnv env;
  env.vars["ARCH_ENABLE"] = "1";
  env.vars["ARCH_SHAREDFS_HOST_PATH"] = shared;
  env.vars["ARCH_WORKDIR_CONTAINER_PATH"] = inside;
  return env;
}

NodeConfig config_with_roots() {
  NodeConfig config;
  config.roots = {{"shared", "/mnt/shared"}, {"efs", "/mnt/efs"}, {"efs-jobs", "/mnt/efs/jobs"}};
  return config;
}

StorePlace place_of(const ArchEnv& env) {
  auto place = store_place_for(env, config_with_roots());
  EXPECT_TRUE(place) << place.error().message();
  return place ? *place : StorePlace{};
}

TEST(StoreLayout, SharedModeWinsAndPathsAreClean) {
  ArchEnv env = shared_env("/mnt/shared/", "/work/");
  env.vars["ARCH_CHECKPOINT_HOST_PATH"] = "/mnt/efs";
  StorePlace place = place_of(env);
  EXPECT_EQ(place.base, "/mnt/shared/checkpoint");
  EXPECT_EQ(place.root, "/mnt/shared");
  auto wd = shared_workdir_for(place, env, "default", "job-1");
  ASSERT_TRUE(wd && *wd);
  EXPECT_EQ((*wd)->host, "/mnt/shared/work/default/job-1");
  EXPECT_EQ((*wd)->root, "/mnt/shared");
  EXPECT_EQ((*wd)->container, "/work");
  auto config = config_with_roots();
  EXPECT_FALSE(store_place_for(shared_env("relative", "/w"), config));
  EXPECT_FALSE(store_place_for(shared_env("/mnt/../etc", "/w"), config));
  EXPECT_FALSE(shared_workdir_for(place, shared_env("/mnt/shared", "/w/../.."), "default", "k"));
  EXPECT_FALSE(shared_workdir_for(place, shared_env("/mnt/shared", "/"), "default", "k"));
  EXPECT_FALSE(shared_workdir_for(place, shared_env("/mnt/shared", "/w"), "default", "../k"));
  auto none = shared_workdir_for(place, shared_env("/mnt/shared", ""), "default", "k");
  ASSERT_TRUE(none);
  EXPECT_FALSE(*none);
}

TEST(StoreLayout, HostPathsMustBeAnAllowedRootOrUnderOne) {
  auto config = config_with_roots();
  ArchEnv env;
  for (const char* bad : {"/etc", "/etc/arch", "/mnt/shared2", "/", "/mnt", "/var/lib/arch"}) {
    env.vars["ARCH_CHECKPOINT_HOST_PATH"] = bad;
    auto place = store_place_for(env, config);
    ASSERT_FALSE(place) << bad;
    EXPECT_EQ(place.error().kind(), ErrorKind::kPermission) << bad;
    EXPECT_NE(place.error().message().find("shared = /mnt/shared"), std::string::npos);
    ArchEnv shared = shared_env(bad, "/w");
    EXPECT_FALSE(store_place_for(shared, config)) << bad;
  }
  env.vars["ARCH_CHECKPOINT_HOST_PATH"] = "/mnt/efs/jobs/x";
  StorePlace place = place_of(env);
  EXPECT_EQ(place.root, "/mnt/efs/jobs");  // The most specific root.
  EXPECT_EQ(place.base, "/mnt/efs/jobs/x");
  env.vars["ARCH_CHECKPOINT_HOST_PATH"] = "/var/lib/arch/checkpoints/sub";
  EXPECT_EQ(place_of(env).root_name, "local");
}

TEST(StoreLayout, RootsChosenByName) {
  ArchEnv env;
  env.vars["ARCH_STORE"] = "efs";
  StorePlace place = place_of(env);
  EXPECT_EQ(place.base, "/mnt/efs");
  EXPECT_TRUE(place.shared.empty());
  env.vars["ARCH_SHAREDFS"] = "shared";
  place = place_of(env);
  EXPECT_EQ(place.base, "/mnt/shared/checkpoint");
  EXPECT_EQ(place.shared, "/mnt/shared");
  env.vars["ARCH_SHAREDFS"] = "nope";
  auto r = store_place_for(env, config_with_roots());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind(), ErrorKind::kPermission);
  EXPECT_EQ(place_of(ArchEnv{}).base, kDefaultStorePath);
}

TEST(SharedMode, SpecGetsTheMountAndCwd) {
  SharedWorkdir wd{"/mnt", "/mnt/s", "/mnt/s/work/default/j", "/work", "/run/arch/mounts/h/c/work"};
  auto text = add_workdir_to_spec(
      R"({"process":{"cwd":"/","args":["sh"]},"mounts":[{"destination":"/proc","type":"proc","source":"proc"}]})",
      wd);
  ASSERT_TRUE(text) << text.error().message();
  auto spec = nlohmann::json::parse(*text);
  EXPECT_EQ(spec["process"]["cwd"], "/work");
  ASSERT_EQ(spec["mounts"].size(), 2u);
  // runc mounts ARCH's root-only bind of the work directory, never the shared path.
  EXPECT_EQ(spec["mounts"][1]["source"], "/run/arch/mounts/h/c/work");
  EXPECT_EQ(spec["mounts"][1]["destination"], "/work");
  EXPECT_EQ(spec["mounts"][1]["type"], "bind");
  // Idempotent: the same edit again changes nothing.
  auto again = add_workdir_to_spec(*text, wd);
  ASSERT_TRUE(again);
  EXPECT_EQ(nlohmann::json::parse(*again)["mounts"].size(), 2u);
}

TEST(SharedMode, RefusesACollidingMountAndBadSpecs) {
  SharedWorkdir wd{"/mnt", "/mnt/s", "/mnt/s/work/default/j", "/work", "/run/arch/mounts/h/c/work"};
  auto clash = add_workdir_to_spec(
      R"({"process":{},"mounts":[{"destination":"/work","type":"bind","source":"/data"}]})", wd);
  ASSERT_FALSE(clash);
  EXPECT_NE(clash.error().message().find("/data"), std::string::npos);
  EXPECT_FALSE(add_workdir_to_spec("not json", wd));
  EXPECT_FALSE(add_workdir_to_spec(R"({"mounts":{}})", wd));
}

class SharedModeDirs : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("arch-shared-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "shared");
    for (auto p : {dir_, dir_ / "shared"}) ::chmod(p.c_str(), 0755);
    fs::create_directories(dir_ / "bundle" / "rootfs" / "etc");
    // An image symlink that would lead a host-side mkdir out of the rootfs.
    fs::create_symlink(dir_ / "outside", dir_ / "bundle" / "rootfs" / "work");
    ASSERT_TRUE(write_file_atomic((dir_ / "bundle" / "config.json").string(),
                                  R"({"process":{"cwd":"/","user":{"uid":1234,"gid":99}},
                                      "root":{"path":"rootfs"}})",
                                  0644));
  }
  void TearDown() override {
    (void)release_workdir_mount((dir_ / "state").string(), "/run/r", "c1");
    fs::remove_all(dir_);
  }
  SharedWorkdir workdir(const std::string& shared, const std::string& inside) const {
    return {dir_.string(), (dir_ / shared).string(), (dir_ / shared / "work/default/job").string(),
            inside, workdir_mount_path((dir_ / "state").string(), "/run/r", "c1")};
  }
  fs::path dir_;
};

TEST_F(SharedModeDirs, CreatesWorkDirAndMountPointInsideTheRootfs) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to chown the work directory";
  SharedWorkdir wd = workdir("shared", "/data/out");
  auto ok = apply_shared_workdir((dir_ / "bundle").string(), (dir_ / "bundle/rootfs").string(), wd);
  ASSERT_TRUE(ok) << ok.error().message();
  struct stat st {};
  ASSERT_EQ(::stat(wd.host.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 1234u);
  EXPECT_EQ(st.st_gid, 99u);
  EXPECT_TRUE(fs::is_directory(dir_ / "bundle/rootfs/data/out"));
  auto spec = nlohmann::json::parse(read_file((dir_ / "bundle/config.json").string()).value());
  EXPECT_EQ(spec["process"]["cwd"], "/data/out");
  EXPECT_EQ(spec["mounts"][0]["source"], wd.mount);
  // The bind shows the work directory, and goes at delete.
  EXPECT_TRUE(fs::exists(fs::path(wd.mount)));
  ASSERT_TRUE(write_file_atomic(wd.host + "/probe", "x", 0644));
  EXPECT_TRUE(fs::exists(fs::path(wd.mount) / "probe"));
  ASSERT_TRUE(release_workdir_mount((dir_ / "state").string(), "/run/r", "c1"));
  EXPECT_FALSE(fs::exists(fs::path(wd.mount)));
  EXPECT_TRUE(fs::exists(fs::path(wd.host) / "probe"));
}

TEST_F(SharedModeDirs, ASymlinkPlantedAtAnyLevelIsNeverMounted) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to bind-mount";
  fs::create_directories(dir_ / "victim");
  ::chmod((dir_ / "victim").c_str(), 0755);
  ASSERT_TRUE(write_file_atomic((dir_ / "victim/secret").string(), "host", 0644));
  for (const char* level : {"shared/work", "shared/work/default", "shared/work/default/job"}) {
    fs::remove_all(dir_ / "shared/work");
    fs::create_directories((dir_ / level).parent_path());
    fs::create_symlink(dir_ / "victim", dir_ / level);
    SharedWorkdir wd = workdir("shared", "/data/out");
    auto ok =
        apply_shared_workdir((dir_ / "bundle").string(), (dir_ / "bundle/rootfs").string(), wd);
    ASSERT_FALSE(ok) << level;
    EXPECT_FALSE(fs::exists(fs::path(wd.mount) / "secret")) << level;
    EXPECT_FALSE(fs::exists(dir_ / "victim/default")) << level;
  }
}

TEST_F(SharedModeDirs, AGroupWritableShareIsRefused) {
  ::chmod((dir_ / "shared").c_str(), 0777);
  SharedWorkdir wd = workdir("shared", "/data/out");
  auto ok = apply_shared_workdir((dir_ / "bundle").string(), (dir_ / "bundle/rootfs").string(), wd);
  ASSERT_FALSE(ok);
  EXPECT_NE(ok.error().message().find("writable by group or others"), std::string::npos);
  EXPECT_FALSE(fs::exists(dir_ / "shared/work"));
}

TEST_F(SharedModeDirs, ImageSymlinkCannotLeadTheMountPointOutOfTheRootfs) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to chown the work directory";
  SharedWorkdir wd = workdir("shared", "/work/out");
  // /work -> <host dir>/outside resolves inside the rootfs, where it does not exist.
  auto ok = apply_shared_workdir((dir_ / "bundle").string(), (dir_ / "bundle/rootfs").string(), wd);
  EXPECT_FALSE(ok);
  EXPECT_FALSE(fs::exists(dir_ / "outside"));
  auto spec = nlohmann::json::parse(read_file((dir_ / "bundle/config.json").string()).value());
  EXPECT_EQ(spec["process"]["cwd"], "/");  // Spec untouched when the create is refused.
}

TEST_F(SharedModeDirs, UnmountedSharePathIsAnErrorNotALocalDirectory) {
  SharedWorkdir wd = workdir("not-mounted", "/work");
  auto ok = apply_shared_workdir((dir_ / "bundle").string(), (dir_ / "bundle/rootfs").string(), wd);
  ASSERT_FALSE(ok);
  EXPECT_NE(ok.error().message().find("mounted"), std::string::npos);
  EXPECT_FALSE(fs::exists(dir_ / "not-mounted"));
}

}  // namespace
}  // namespace arch
