// Tests for node key files: init, rotate, rm, export/import, and the ownership/mode checks.
#include "store/node_key.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "base/file_util.h"

namespace arch {
namespace {

namespace fs = std::filesystem;

class NodeKeyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("arch-keys-" + std::to_string(::getpid()) + "-" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
    dir_ = (root_ / "keys").string();
  }
  void TearDown() override { fs::remove_all(root_); }
  fs::path root_;
  std::string dir_;
};

TEST_F(NodeKeyTest, InitCreatesOnePrivateKeyAndIsIdempotent) {
  bool created = false;
  auto first = init_node_keys(dir_, &created);
  ASSERT_TRUE(first) << first.error().message();
  EXPECT_TRUE(created);
  EXPECT_EQ(first->secret.size(), kNodeKeyBytes);
  EXPECT_EQ(first->id, node_key_id(first->secret));
  struct stat st {};
  ASSERT_EQ(::stat(dir_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(::stat((dir_ + "/" + first->id + ".key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto again = init_node_keys(dir_, &created);
  ASSERT_TRUE(again);
  EXPECT_FALSE(created);
  EXPECT_EQ(again->id, first->id);
}

TEST_F(NodeKeyTest, NoDirectoryOrNoKeyIsENOKEYNamingInit) {
  auto ring = load_keyring(dir_);
  ASSERT_FALSE(ring);
  EXPECT_EQ(ring.error().code(), ENOKEY);
  EXPECT_NE(ring.error().message().find("archctl key init"), std::string::npos);
  fs::create_directory(dir_);
  fs::permissions(dir_, fs::perms::owner_all, fs::perm_options::replace);
  ring = load_keyring(dir_);
  ASSERT_FALSE(ring);
  EXPECT_EQ(ring.error().code(), ENOKEY);
}

TEST_F(NodeKeyTest, RotateMakesANewActiveKeyAndKeepsTheOldUntilRemoved) {
  auto first = init_node_keys(dir_);
  ASSERT_TRUE(first);
  auto second = rotate_node_key(dir_);
  ASSERT_TRUE(second);
  auto ring = load_keyring(dir_);
  ASSERT_TRUE(ring) << ring.error().message();
  EXPECT_EQ(ring->keys().size(), 2u);
  EXPECT_EQ(ring->active()->id, second->id);
  EXPECT_NE(ring->find(first->id), nullptr);
  // The config may name the active key.
  auto pinned = load_keyring(dir_, first->id);
  ASSERT_TRUE(pinned);
  EXPECT_EQ(pinned->active()->id, first->id);

  auto rm_active = remove_node_key(dir_, second->id);
  ASSERT_FALSE(rm_active);
  EXPECT_NE(rm_active.error().message().find("active"), std::string::npos);
  ASSERT_TRUE(remove_node_key(dir_, first->id));
  ring = load_keyring(dir_);
  ASSERT_TRUE(ring);
  EXPECT_EQ(ring->keys().size(), 1u);
  EXPECT_EQ(ring->find(first->id), nullptr);
}

TEST_F(NodeKeyTest, ExportImportGivesTheSameKeyOnAnotherNode) {
  auto key = init_node_keys(dir_);
  ASSERT_TRUE(key);
  std::string line = export_node_key(*key);
  auto parsed = parse_exported_node_key(line);
  ASSERT_TRUE(parsed) << parsed.error().message();
  EXPECT_EQ(parsed->id, key->id);
  EXPECT_EQ(parsed->secret, key->secret);
  std::string other = (root_ / "other").string();
  ASSERT_TRUE(install_node_key(other, *parsed));
  ASSERT_TRUE(install_node_key(other, *parsed));  // again: no change
  auto ring = load_keyring(other);
  ASSERT_TRUE(ring) << ring.error().message();
  EXPECT_EQ(ring->active()->secret, key->secret);

  std::string damaged = line;
  damaged[damaged.size() - 2] = damaged[damaged.size() - 2] == '0' ? '1' : '0';
  EXPECT_FALSE(parse_exported_node_key(damaged));
  EXPECT_FALSE(parse_exported_node_key("arch-node-key 1 abc"));
}

TEST_F(NodeKeyTest, KeysOthersCanReadOrReplaceAreNotUsed) {
  auto key = init_node_keys(dir_);
  ASSERT_TRUE(key);
  std::string file = dir_ + "/" + key->id + ".key";
  // Group-readable key file.
  ASSERT_EQ(::chmod(file.c_str(), 0640), 0);
  EXPECT_FALSE(load_keyring(dir_));
  ASSERT_EQ(::chmod(file.c_str(), 0600), 0);
  // Group-writable directory.
  ASSERT_EQ(::chmod(dir_.c_str(), 0770), 0);
  EXPECT_FALSE(load_keyring(dir_));
  ASSERT_EQ(::chmod(dir_.c_str(), 0700), 0);
  ASSERT_TRUE(load_keyring(dir_));
  // A symlinked key file.
  std::string elsewhere = (root_ / "stolen.key").string();
  fs::rename(file, elsewhere);
  fs::create_symlink(elsewhere, file);
  EXPECT_FALSE(load_keyring(dir_));
  fs::remove(file);
  fs::rename(elsewhere, file);
  // A file whose name is not its key's id.
  auto other = generate_node_key();
  ASSERT_TRUE(other);
  ASSERT_TRUE(
      write_file_atomic(dir_ + "/0000000000000000.key", export_node_key(*other).substr(33), 0600));
  auto ring = load_keyring(dir_);
  ASSERT_FALSE(ring);
  EXPECT_NE(ring.error().message().find("not the one its name says"), std::string::npos)
      << ring.error().message();
}

}  // namespace
}  // namespace arch
