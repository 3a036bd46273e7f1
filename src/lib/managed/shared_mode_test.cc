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

TEST(StoreLayout, SharedModeWinsAndPathsAreClean) {
  NodeConfig config;
  ArchEnv env = shared_env("/mnt/shared/", "/work/");
  env.vars["ARCH_CHECKPOINT_HOST_PATH"] = "/local";
  EXPECT_EQ(store_base_for(env, config).value(), "/mnt/shared/checkpoint");
  auto wd = shared_workdir_for(env, "default", "job-1");
  ASSERT_TRUE(wd && *wd);
  EXPECT_EQ((*wd)->host, "/mnt/shared/work/default/job-1");
  EXPECT_EQ((*wd)->container, "/work");
  EXPECT_FALSE(store_base_for(shared_env("relative", "/w"), config));
  EXPECT_FALSE(store_base_for(shared_env("/mnt/../etc", "/w"), config));
  EXPECT_FALSE(shared_workdir_for(shared_env("/mnt/s", "/w/../.."), "default", "k"));
  EXPECT_FALSE(shared_workdir_for(shared_env("/mnt/s", "/"), "default", "k"));
  EXPECT_FALSE(shared_workdir_for(shared_env("/mnt/s", "/w"), "default", "../k"));
  ArchEnv no_workdir = shared_env("/mnt/s", "");
  auto none = shared_workdir_for(no_workdir, "default", "k");
  ASSERT_TRUE(none);
  EXPECT_FALSE(*none);
}

TEST(SharedMode, SpecGetsTheMountAndCwd) {
  SharedWorkdir wd{"/mnt/s", "/mnt/s/work/default/j", "/work"};
  auto text = add_workdir_to_spec(
      R"({"process":{"cwd":"/","args":["sh"]},"mounts":[{"destination":"/proc","type":"proc","source":"proc"}]})",
      wd);
  ASSERT_TRUE(text) << text.error().message();
  auto spec = nlohmann::json::parse(*text);
  EXPECT_EQ(spec["process"]["cwd"], "/work");
  ASSERT_EQ(spec["mounts"].size(), 2u);
  EXPECT_EQ(spec["mounts"][1]["source"], "/mnt/s/work/default/j");
  EXPECT_EQ(spec["mounts"][1]["destination"], "/work");
  EXPECT_EQ(spec["mounts"][1]["type"], "bind");
  // Idempotent: the same edit again changes nothing.
  auto again = add_workdir_to_spec(*text, wd);
  ASSERT_TRUE(again);
  EXPECT_EQ(nlohmann::json::parse(*again)["mounts"].size(), 2u);
}

TEST(SharedMode, RefusesACollidingMountAndBadSpecs) {
  SharedWorkdir wd{"/mnt/s", "/mnt/s/work/default/j", "/work"};
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
    fs::create_directories(dir_ / "bundle" / "rootfs" / "etc");
    // An image symlink that would lead a host-side mkdir out of the rootfs.
    fs::create_symlink(dir_ / "outside", dir_ / "bundle" / "rootfs" / "work");
    ASSERT_TRUE(write_file_atomic((dir_ / "bundle" / "config.json").string(),
                                  R"({"process":{"cwd":"/","user":{"uid":1234,"gid":99}},
                                      "root":{"path":"rootfs"}})",
                                  0644));
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(SharedModeDirs, CreatesWorkDirAndMountPointInsideTheRootfs) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to chown the work directory";
  SharedWorkdir wd{(dir_ / "shared").string(), (dir_ / "shared/work/default/job").string(),
                   "/data/out"};
  auto ok = apply_shared_workdir((dir_ / "bundle").string(), (dir_ / "bundle/rootfs").string(), wd);
  ASSERT_TRUE(ok) << ok.error().message();
  struct stat st {};
  ASSERT_EQ(::stat(wd.host.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 1234u);
  EXPECT_EQ(st.st_gid, 99u);
  EXPECT_TRUE(fs::is_directory(dir_ / "bundle/rootfs/data/out"));
  auto spec = nlohmann::json::parse(read_file((dir_ / "bundle/config.json").string()).value());
  EXPECT_EQ(spec["process"]["cwd"], "/data/out");
  EXPECT_EQ(spec["mounts"][0]["source"], wd.host);
}

TEST_F(SharedModeDirs, ImageSymlinkCannotLeadTheMountPointOutOfTheRootfs) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to chown the work directory";
  SharedWorkdir wd{(dir_ / "shared").string(), (dir_ / "shared/work/default/job").string(),
                   "/work/out"};
  // /work -> <host dir>/outside resolves inside the rootfs, where it does not exist.
  auto ok = apply_shared_workdir((dir_ / "bundle").string(), (dir_ / "bundle/rootfs").string(), wd);
  EXPECT_FALSE(ok);
  EXPECT_FALSE(fs::exists(dir_ / "outside"));
  auto spec = nlohmann::json::parse(read_file((dir_ / "bundle/config.json").string()).value());
  EXPECT_EQ(spec["process"]["cwd"], "/");  // Spec untouched when the create is refused.
}

TEST_F(SharedModeDirs, UnmountedSharePathIsAnErrorNotALocalDirectory) {
  SharedWorkdir wd{(dir_ / "not-mounted").string(),
                   (dir_ / "not-mounted/work/default/job").string(), "/work"};
  auto ok = apply_shared_workdir((dir_ / "bundle").string(), (dir_ / "bundle/rootfs").string(), wd);
  ASSERT_FALSE(ok);
  EXPECT_NE(ok.error().message().find("mounted"), std::string::npos);
  EXPECT_FALSE(fs::exists(dir_ / "not-mounted"));
}

}  // namespace
}  // namespace arch
