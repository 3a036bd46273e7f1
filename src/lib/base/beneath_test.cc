// Tests for Beneath: trusted walks refuse symlinks, escapes and directories others could change.
#include "base/beneath.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "base/file_util.h"

namespace arch {
namespace {

namespace fs = std::filesystem;

class BeneathTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("arch-beneath-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "root/a/b");
    fs::create_directories(dir_ / "victim");
    for (auto p : {dir_, dir_ / "root", dir_ / "root/a", dir_ / "root/a/b", dir_ / "victim"})
      ::chmod(p.c_str(), 0755);
    auto fd = open_trusted_root((dir_ / "root").string());
    ASSERT_TRUE(fd) << fd.error().message();
    root_ = std::move(*fd);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
  UniqueFd root_;
};

TEST_F(BeneathTest, OpensAndCreatesBelowTheRoot) {
  EXPECT_TRUE(open_trusted_path(root_.get(), "a/b", "root"));
  EXPECT_TRUE(open_trusted_path(root_.get(), "", "root"));
  EXPECT_FALSE(open_trusted_path(root_.get(), "a/b/c/d", "root"));
  auto made = open_trusted_path(root_.get(), "a/b/c/d", "root", BeneathOptions{.create = true});
  ASSERT_TRUE(made) << made.error().message();
  struct stat st {};
  ASSERT_EQ(::stat((dir_ / "root/a/b/c/d").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
}

TEST_F(BeneathTest, ASymlinkAtAnyLevelIsRefused) {
  fs::create_symlink(dir_ / "victim", dir_ / "root/a/link");
  auto r = open_trusted_path(root_.get(), "a/link", "root", BeneathOptions{.create = true});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ENOTDIR);
  EXPECT_NE(r.error().message().find("symlink"), std::string::npos);
  EXPECT_FALSE(open_trusted_path(root_.get(), "a/link/x", "root", BeneathOptions{.create = true}));
  EXPECT_FALSE(fs::exists(dir_ / "victim/x"));
  // A relative symlink that stays inside is refused too: no symlink is ever followed.
  fs::create_symlink("b", dir_ / "root/a/inside");
  EXPECT_FALSE(open_trusted_path(root_.get(), "a/inside", "root"));
}

TEST_F(BeneathTest, DotDotAndAbsolutePathsCannotLeave) {
  EXPECT_FALSE(open_trusted_path(root_.get(), "a/../../victim", "root"));
  EXPECT_FALSE(open_dir_beneath(root_.get(), "../victim", "x"));
  EXPECT_FALSE(open_dir_beneath(root_.get(), (dir_ / "victim").string(), "x"));
}

TEST_F(BeneathTest, GroupOrOtherWritableDirectoriesAreRefusedNotChmodded) {
  ::chmod((dir_ / "root/a").c_str(), 0777);
  auto r = open_trusted_path(root_.get(), "a/b", "root");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), EPERM);
  struct stat st {};
  ASSERT_EQ(::stat((dir_ / "root/a").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0777u);  // Left as it was.
  ::chmod((dir_ / "root").c_str(), 0775);
  EXPECT_FALSE(open_trusted_root((dir_ / "root").string()));
}

TEST_F(BeneathTest, ADirectoryOwnedByAnotherUserIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to chown";
  ASSERT_EQ(::chown((dir_ / "root/a").c_str(), 1234, 1234), 0);
  auto r = open_trusted_path(root_.get(), "a/b", "root");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("owned by uid 1234"), std::string::npos);
}

TEST(PathIsUnder, ComparesWholeComponents) {
  EXPECT_TRUE(path_is_under("/mnt/shared", "/mnt/shared"));
  EXPECT_TRUE(path_is_under("/mnt/shared/x", "/mnt/shared/"));
  EXPECT_FALSE(path_is_under("/mnt/shared2", "/mnt/shared"));
  EXPECT_FALSE(path_is_under("/etc", "/mnt/shared"));
  EXPECT_TRUE(path_is_under("/etc", "/"));
}

}  // namespace
}  // namespace arch
