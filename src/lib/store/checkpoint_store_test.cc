// Tests for CheckpointStore on real directories: commit, verification, moving aside,
// crashed writers, pruning, locking, symlinks in the store and a full filesystem.
#include "store/checkpoint_store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

#include "base/file_util.h"
#include "store/seal.h"

namespace arch {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

void write(const fs::path& p, const std::string& data) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << data;
}

mode_t mode_of(const fs::path& p) {
  struct stat st {};
  EXPECT_EQ(::lstat(p.c_str(), &st), 0) << p;
  return st.st_mode & 07777;
}

// Entries of `dir` whose names start with `prefix`, sorted.
std::vector<std::string> entries(const fs::path& dir, const std::string& prefix) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    auto name = e.path().filename().string();
    if (name.starts_with(prefix)) out.push_back(name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

class CheckpointStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("arch-store-" + std::to_string(::getpid()) + "-" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
    base_ = root_ / "store";
    auto key = generate_node_key();
    ASSERT_TRUE(key);
    auto ring = std::make_shared<Keyring>();
    ring->add(*key, true);
    keys_ = ring;
  }
  void TearDown() override {
    if (mounted_) ::umount2(root_.c_str(), MNT_DETACH);
    fs::remove_all(root_);
  }

  fs::path key_dir(const std::string& ns = "default", const std::string& key = "job") {
    return base_ / ns / key;
  }

  // Locks, writes `files` into a new staging directory and commits it.
  std::string commit(CheckpointStore& store, const std::map<std::string, std::string>& files,
                     const std::string& ns = "default", const std::string& key = "job") {
    auto lock = store.lock(ns, key);
    EXPECT_TRUE(lock) << lock.error().message();
    if (!lock) return "";
    auto staging = store.begin(*lock);
    EXPECT_TRUE(staging) << staging.error().message();
    if (!staging) return "";
    for (const auto& [path, data] : files) write(fs::path(staging->path()) / path, data);
    Manifest m;
    m.container_id = "c-" + key;
    auto committed = store.commit(std::move(*staging), m, *lock);
    EXPECT_TRUE(committed) << committed.error().message();
    return committed ? *committed : "";
  }

  fs::path root_, base_;
  std::shared_ptr<const Keyring> keys_;
  bool mounted_ = false;
};

TEST_F(CheckpointStoreTest, CommitMakesAPrivateGenerationWithItsManifest) {
  CheckpointStore store(base_.string(), 2, keys_);
  EXPECT_FALSE(store.has_committed("default", "job"));
  ::umask(022);
  std::string path = commit(store, {{"images/pages-1.img", "pages"}, {"rootfs-diff.tar", "tar"}});
  ASSERT_FALSE(path.empty());
  EXPECT_EQ(fs::path(path).parent_path(), key_dir());
  EXPECT_TRUE(fs::path(path).filename().string().starts_with("ckpt-"));
  EXPECT_EQ(fs::path(path).filename().string().size(), 5u + 26u);

  for (const auto& dir :
       {base_, base_ / "default", key_dir(), fs::path(path), fs::path(path) / "images"}) {
    EXPECT_EQ(mode_of(dir), 0700u) << dir;
  }
  for (const auto& file : {fs::path(path) / "manifest.json", fs::path(path) / "rootfs-diff.tar",
                           fs::path(path) / "images" / "pages-1.img", key_dir() / ".lock"}) {
    EXPECT_EQ(mode_of(file), 0600u) << file;
  }
  EXPECT_TRUE(entries(key_dir(), "staging-").empty());

  auto text = read_file(path + "/manifest.json");
  ASSERT_TRUE(text);
  auto m = parse_manifest(*text);
  ASSERT_TRUE(m) << m.error().message();
  EXPECT_EQ(m->ns, "default");
  EXPECT_EQ(m->key, "job");
  EXPECT_EQ(m->container_id, "c-job");
  EXPECT_FALSE(m->created.empty());
  EXPECT_FALSE(m->versions.arch.empty());
  ASSERT_EQ(m->files.size(), 2u);
  EXPECT_EQ(m->files[0].path, "images/pages-1.img");
  EXPECT_TRUE(store.has_committed("default", "job"));
}

TEST_F(CheckpointStoreTest, LatestVerifiedReturnsTheNewest) {
  CheckpointStore store(base_.string(), 2, keys_);
  std::string first = commit(store, {{"a", "one"}});
  std::string second = commit(store, {{"a", "two"}});
  ASSERT_LT(first, second);
  auto lock = store.lock("default", "job");
  ASSERT_TRUE(lock);
  auto latest = store.latest_verified("default", "job", *lock);
  ASSERT_TRUE(latest) << latest.error().message();
  EXPECT_EQ(latest->path, second);
  EXPECT_TRUE(latest->skipped.empty());
  ASSERT_EQ(latest->manifest.files.size(), 1u);
  EXPECT_EQ(latest->manifest.files[0].size, 3u);
}

TEST_F(CheckpointStoreTest, NoCheckpointIsENOENT) {
  CheckpointStore store(base_.string(), 2, keys_);
  auto lock = store.lock("default", "job");
  ASSERT_TRUE(lock);
  auto latest = store.latest_verified("default", "job", *lock);
  ASSERT_FALSE(latest);
  EXPECT_EQ(latest.error().code(), ENOENT);
}

TEST_F(CheckpointStoreTest, CorruptNewestIsMovedAsideWithReasonAndTheOlderReturned) {
  CheckpointStore store(base_.string(), 2, keys_);
  std::string good = commit(store, {{"pages.img", std::string(5000, 'g')}});
  std::string bad = commit(store, {{"pages.img", std::string(5000, 'b')}});
  {
    std::fstream f(bad + "/pages.img", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(4000);
    f.put('X');
  }
  auto lock = store.lock("default", "job");
  ASSERT_TRUE(lock);
  auto latest = store.latest_verified("default", "job", *lock);
  ASSERT_TRUE(latest) << latest.error().message();
  EXPECT_EQ(latest->path, good);
  ASSERT_EQ(latest->skipped.size(), 1u);
  EXPECT_NE(latest->skipped[0].find("pages.img: sha256"), std::string::npos) << latest->skipped[0];

  EXPECT_FALSE(fs::exists(bad));
  auto failed = entries(key_dir(), "failed-");
  ASSERT_EQ(failed.size(), 1u);
  auto reason = read_file((key_dir() / failed[0] / "reason.txt").string());
  ASSERT_TRUE(reason);
  EXPECT_NE(reason->find("pages.img: sha256"), std::string::npos) << *reason;
  EXPECT_EQ(mode_of(key_dir() / failed[0] / "reason.txt"), 0600u);

  auto infos = store.list("default", "job", /*verify=*/true);
  ASSERT_TRUE(infos) << infos.error().message();
  ASSERT_EQ(infos->size(), 2u);
  EXPECT_EQ((*infos)[0].state, CheckpointState::kVerified);
  EXPECT_EQ((*infos)[0].path, good);
  EXPECT_EQ((*infos)[0].total_size, 5000u + fs::file_size(good + "/manifest.json"));
  EXPECT_EQ((*infos)[1].state, CheckpointState::kFailed);
  EXPECT_NE((*infos)[1].reason.find("sha256"), std::string::npos);
  EXPECT_TRUE((*infos)[1].manifest.has_value());
}

TEST_F(CheckpointStoreTest, EveryGenerationCorruptMeansNoneAndAllMovedAside) {
  CheckpointStore store(base_.string(), 2, keys_);
  std::string only = commit(store, {{"a", "1"}});
  fs::remove(only + "/manifest.json");
  auto lock = store.lock("default", "job");
  ASSERT_TRUE(lock);
  auto latest = store.latest_verified("default", "job", *lock);
  ASSERT_FALSE(latest);
  EXPECT_EQ(latest.error().code(), ENOENT);
  EXPECT_NE(latest.error().message().find("1 moved aside"), std::string::npos)
      << latest.error().message();
  EXPECT_EQ(entries(key_dir(), "failed-").size(), 1u);
  EXPECT_FALSE(store.has_committed("default", "job"));
}

TEST_F(CheckpointStoreTest, CrashedWritersStagingIsIgnoredAndCleanedUp) {
  CheckpointStore store(base_.string(), 2, keys_);
  std::string good = commit(store, {{"a", "good"}});
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // A writer that dies mid-checkpoint: no destructors, no commit.
    auto lock = store.lock("default", "job");
    if (!lock) ::_exit(2);
    auto staging = store.begin(*lock);
    if (!staging) ::_exit(3);
    write(fs::path(staging->path()) / "pages.img", "half");
    write(fs::path(staging->path()) / "manifest.json", "{}");
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  ASSERT_EQ(entries(key_dir(), "staging-").size(), 1u);

  auto infos = store.list("default", "job");
  ASSERT_TRUE(infos);
  ASSERT_EQ(infos->size(), 2u);
  EXPECT_EQ((*infos)[1].state, CheckpointState::kStaging);

  auto lock = store.lock("default", "job", milliseconds(1000));
  ASSERT_TRUE(lock) << lock.error().message();
  auto latest = store.latest_verified("default", "job", *lock);
  ASSERT_TRUE(latest);
  EXPECT_EQ(latest->path, good);

  // A staging directory of our own, begun under this lock, is not stale.
  auto mine = store.begin(*lock);
  ASSERT_TRUE(mine);
  auto removed = store.cleanup_stale(*lock);
  ASSERT_TRUE(removed) << removed.error().message();
  EXPECT_EQ(*removed, 1u);
  auto left = entries(key_dir(), "staging-");
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(key_dir() / left[0], fs::path(mine->path()));
  { Staging dropped = std::move(*mine); }
  EXPECT_TRUE(entries(key_dir(), "staging-").empty());
  EXPECT_TRUE(fs::exists(good));
}

TEST_F(CheckpointStoreTest, PrunesBeyondKeepOnlyAfterACommit) {
  CheckpointStore store(base_.string(), /*keep=*/2, keys_);
  std::string g1 = commit(store, {{"a", "1"}});
  std::string g2 = commit(store, {{"a", "2"}});
  ASSERT_EQ(entries(key_dir(), "ckpt-").size(), 2u);
  {
    // A third checkpoint that fails to commit (a symlink in it) prunes nothing.
    auto lock = store.lock("default", "job");
    ASSERT_TRUE(lock);
    auto staging = store.begin(*lock);
    ASSERT_TRUE(staging);
    write(fs::path(staging->path()) / "a", "3");
    fs::create_symlink("/etc/shadow", fs::path(staging->path()) / "link");
    auto committed = store.commit(std::move(*staging), Manifest{}, *lock);
    ASSERT_FALSE(committed);
    EXPECT_NE(committed.error().message().find("link: a symlink"), std::string::npos)
        << committed.error().message();
    EXPECT_TRUE(fs::exists(g1));
    EXPECT_TRUE(fs::exists(g2));
    EXPECT_TRUE(entries(key_dir(), "staging-").empty());
  }
  std::string g3 = commit(store, {{"a", "3"}});
  auto left = entries(key_dir(), "ckpt-");
  ASSERT_EQ(left.size(), 2u);
  EXPECT_EQ(key_dir() / left[0], fs::path(g2));
  EXPECT_EQ(key_dir() / left[1], fs::path(g3));
}

TEST_F(CheckpointStoreTest, GenerationNamesIncreaseWithinOneClockTick) {
  CheckpointStore store(base_.string(), /*keep=*/10, keys_);
  std::vector<std::string> paths;
  for (int i = 0; i < 5; ++i) paths.push_back(commit(store, {{"a", std::to_string(i)}}));
  for (std::size_t i = 1; i < paths.size(); ++i) EXPECT_LT(paths[i - 1], paths[i]);
  // A generation stamped in the future (clock stepped back): the next one still sorts after.
  auto far = key_dir() / "ckpt-22001231T235959.999999999Z";
  fs::rename(paths.back(), far);
  std::string next = commit(store, {{"a", "next"}});
  EXPECT_GT(next, far.string());
  EXPECT_EQ(fs::path(next).filename(), "ckpt-22010101T000000.000000000Z");
}

TEST_F(CheckpointStoreTest, SameKeySerialisesDifferentKeysDoNot) {
  CheckpointStore store(base_.string(), 2, keys_);
  auto held = store.lock("default", "job");
  ASSERT_TRUE(held);

  auto again = store.lock("default", "job", milliseconds(0));
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code(), EWOULDBLOCK);
  auto other_key = store.lock("default", "other", milliseconds(0));
  EXPECT_TRUE(other_key) << other_key.error().message();
  auto other_ns = store.lock("k8s.io", "job", milliseconds(0));
  EXPECT_TRUE(other_ns) << other_ns.error().message();

  std::atomic<bool> released{false};
  std::atomic<bool> early{false};
  std::thread waiter([&] {
    auto second = store.lock("default", "job");
    if (!released) early = true;
    EXPECT_TRUE(second);
  });
  std::this_thread::sleep_for(milliseconds(150));
  released = true;
  { KeyLock drop = std::move(*held); }
  waiter.join();
  EXPECT_FALSE(early);
}

TEST_F(CheckpointStoreTest, LockExcludesAnotherProcess) {
  CheckpointStore store(base_.string(), 2, keys_);
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto lock = store.lock("default", "job");
    char c = lock ? 'y' : 'n';
    (void)!::write(ready[1], &c, 1);
    ::usleep(300 * 1000);
    ::_exit(0);
  }
  ::close(ready[1]);
  char c = 0;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ::close(ready[0]);
  ASSERT_EQ(c, 'y');
  auto timed = store.lock("default", "job", milliseconds(50));
  ASSERT_FALSE(timed);
  EXPECT_EQ(timed.error().code(), ETIMEDOUT);
  auto waited = store.lock("default", "job", milliseconds(10000));
  EXPECT_TRUE(waited) << waited.error().message();
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
}

TEST_F(CheckpointStoreTest, SymlinksNamedLikeGenerationsAreIgnored) {
  CheckpointStore store(base_.string(), 2, keys_);
  std::string real = commit(store, {{"a", "real"}}, "default", "job");
  std::string other = commit(store, {{"a", "other"}}, "default", "other");

  // An empty key whose only "generation" is a symlink to a valid checkpoint.
  auto lock = store.lock("default", "empty");
  ASSERT_TRUE(lock);
  fs::create_directory_symlink(real,
                               key_dir("default", "empty") / "ckpt-22001231T000000.000000000Z");
  EXPECT_FALSE(store.has_committed("default", "empty"));
  auto none = store.latest_verified("default", "empty", *lock);
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code(), ENOENT);
  auto listed = store.list("default", "empty", true);
  ASSERT_TRUE(listed);
  EXPECT_TRUE(listed->empty());

  // A newer-named symlink beside a real generation: the real one is returned, the link and
  // its target are left alone.
  auto job_lock = store.lock("default", "job");
  ASSERT_TRUE(job_lock);
  auto link = key_dir() / "ckpt-22001231T000000.000000000Z";
  fs::create_directory_symlink(other, link);
  auto latest = store.latest_verified("default", "job", *job_lock);
  ASSERT_TRUE(latest) << latest.error().message();
  EXPECT_EQ(latest->path, real);
  EXPECT_TRUE(fs::is_symlink(link));
  EXPECT_TRUE(fs::exists(other + "/manifest.json"));
  EXPECT_TRUE(entries(key_dir(), "failed-").empty());

  // move_aside and remove_one refuse a symlink or anything outside the key.
  EXPECT_FALSE(store.move_aside(link.string(), "x", *job_lock));
  EXPECT_FALSE(store.move_aside(other, "x", *job_lock));
  EXPECT_FALSE(store.remove_one(other, *job_lock));
  EXPECT_FALSE(store.remove_one(key_dir().string() + "/../other", *job_lock));
  EXPECT_FALSE(store.remove_one("/etc", *job_lock));
  EXPECT_TRUE(fs::exists(other));
}

TEST_F(CheckpointStoreTest, SymlinkedNamespaceOrKeyDirectoryIsRefused) {
  CheckpointStore store(base_.string(), 2, keys_);
  fs::create_directories(base_);
  fs::create_directories(root_ / "elsewhere");
  fs::create_directory_symlink(root_ / "elsewhere", base_ / "evil");
  auto lock = store.lock("evil", "job");
  ASSERT_FALSE(lock);
  EXPECT_EQ(lock.error().code(), ENOTDIR) << lock.error().message();
  EXPECT_TRUE(fs::is_empty(root_ / "elsewhere"));
  EXPECT_FALSE(store.has_committed("evil", "job"));
}

TEST_F(CheckpointStoreTest, ACheckpointCopiedFromAnotherKeyIsNotRestored) {
  CheckpointStore store(base_.string(), 2, keys_);
  std::string theirs = commit(store, {{"a", "theirs"}}, "default", "victim");
  auto lock = store.lock("default", "job");
  ASSERT_TRUE(lock);
  fs::copy(theirs, key_dir() / fs::path(theirs).filename(), fs::copy_options::recursive);
  auto latest = store.latest_verified("default", "job", *lock);
  ASSERT_FALSE(latest);
  EXPECT_NE(latest.error().message().find("manifest is for default/victim"), std::string::npos)
      << latest.error().message();
}

TEST_F(CheckpointStoreTest, RefusesBadNamesBeforeTouchingTheDisk) {
  CheckpointStore store(base_.string(), 2, keys_);
  for (auto [ns, key] :
       std::vector<std::pair<std::string, std::string>>{{"..", "job"},
                                                        {"default", "../x"},
                                                        {"default", "a/b"},
                                                        {"", "job"},
                                                        {"default", std::string(129, 'k')},
                                                        {"default", ".hidden"},
                                                        {"-x", "job"}}) {
    auto lock = store.lock(ns, key);
    EXPECT_FALSE(lock) << ns << "/" << key;
    EXPECT_FALSE(store.list(ns, key));
    EXPECT_FALSE(store.has_committed(ns, key));
  }
  EXPECT_FALSE(fs::exists(base_));
  EXPECT_EQ(std::distance(fs::directory_iterator(root_), fs::directory_iterator()), 0);
}

TEST_F(CheckpointStoreTest, LockOfAnotherKeyIsRefused) {
  CheckpointStore store(base_.string(), 2, keys_);
  commit(store, {{"a", "1"}});
  auto other = store.lock("default", "other");
  ASSERT_TRUE(other);
  auto latest = store.latest_verified("default", "job", *other);
  ASSERT_FALSE(latest);
  EXPECT_NE(latest.error().message().find("key lock is for default/other"), std::string::npos);
  EXPECT_FALSE(store.remove("default", "job", *other));
  CheckpointStore elsewhere((root_ / "other-store").string(), 2, keys_);
  EXPECT_FALSE(elsewhere.begin(*other));
}

TEST_F(CheckpointStoreTest, ListAllWalksEveryNamespaceAndKey) {
  CheckpointStore store(base_.string(), 2, keys_);
  commit(store, {{"a", "1"}}, "default", "a");
  commit(store, {{"a", "2"}}, "default", "b");
  commit(store, {{"a", "3"}}, "k8s.io", "c");
  fs::create_directories(base_ / "not..valid" / "x");  // stray entries are skipped
  write(base_ / "stray-file", "x");
  auto all = store.list_all(/*verify=*/true);
  ASSERT_TRUE(all) << all.error().message();
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[0].key, "a");
  EXPECT_EQ((*all)[2].ns, "k8s.io");
  for (const auto& info : *all) {
    EXPECT_EQ(info.state, CheckpointState::kVerified) << info.reason;
    EXPECT_FALSE(info.created.empty());
  }
  auto cheap = store.list_all();
  ASSERT_TRUE(cheap);
  EXPECT_EQ((*cheap)[0].state, CheckpointState::kCommitted);
  EXPECT_EQ(to_string((*cheap)[0].state), "committed");

  CheckpointStore missing((root_ / "nothing-here").string(), 2, keys_);
  auto none = missing.list_all();
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->empty());
}

TEST_F(CheckpointStoreTest, RemoveTakesTheKeyAwayAndAWaiterStartsAfresh) {
  CheckpointStore store(base_.string(), 2, keys_);
  commit(store, {{"a", "1"}});
  commit(store, {{"a", "2"}});
  auto lock = store.lock("default", "job");
  ASSERT_TRUE(lock);
  ASSERT_TRUE(store.move_aside(store.list("default", "job")->front().path, "test", *lock));

  std::optional<Result<KeyLock>> waiter_lock;
  std::thread waiter([&] { waiter_lock = store.lock("default", "job"); });
  std::this_thread::sleep_for(milliseconds(100));
  auto removed = store.remove("default", "job", *lock);
  ASSERT_TRUE(removed) << removed.error().message();
  EXPECT_FALSE(store.has_committed("default", "job"));
  { KeyLock drop = std::move(*lock); }
  waiter.join();
  ASSERT_TRUE(*waiter_lock) << (*waiter_lock).error().message();

  // The waiter's lock is on the live lock file and it can checkpoint again.
  EXPECT_FALSE(store.lock("default", "job", milliseconds(0)));
  auto staging = store.begin(**waiter_lock);
  ASSERT_TRUE(staging) << staging.error().message();
  write(fs::path(staging->path()) / "a", "3");
  auto committed = store.commit(std::move(*staging), Manifest{}, **waiter_lock);
  ASSERT_TRUE(committed) << committed.error().message();
  auto infos = store.list("default", "job");
  ASSERT_TRUE(infos);
  EXPECT_EQ(infos->size(), 1u);
}

TEST_F(CheckpointStoreTest, RemoveOneTakesOneGeneration) {
  CheckpointStore store(base_.string(), 2, keys_);
  std::string g1 = commit(store, {{"a", "1"}});
  std::string g2 = commit(store, {{"a", "2"}});
  auto lock = store.lock("default", "job");
  ASSERT_TRUE(lock);
  ASSERT_TRUE(store.remove_one(g2, *lock));
  EXPECT_FALSE(fs::exists(g2));
  auto latest = store.latest_verified("default", "job", *lock);
  ASSERT_TRUE(latest);
  EXPECT_EQ(latest->path, g1);
}

TEST_F(CheckpointStoreTest, FullFilesystemFailsTheCommitAndKeepsThePrevious) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a tmpfs";
  if (::mount("tmpfs", root_.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=0700") != 0) {
    GTEST_SKIP() << "cannot mount a tmpfs here: " << std::strerror(errno);
  }
  mounted_ = true;
  CheckpointStore store(base_.string(), 2, keys_);
  std::string good = commit(store, {{"a", "small"}});
  ASSERT_FALSE(good.empty());
  {
    auto lock = store.lock("default", "job");
    ASSERT_TRUE(lock);
    auto staging = store.begin(*lock);
    ASSERT_TRUE(staging);
    // The writer fills the filesystem (its own write fails short, as CRIU's would).
    auto fd = open_file(staging->path() + "/pages.img", O_WRONLY | O_CREAT, 0600);
    ASSERT_TRUE(fd);
    auto wrote = write_all(fd->get(), std::string(1 << 20, 'p'));
    EXPECT_FALSE(wrote);
    fd->reset();
    auto committed = store.commit(std::move(*staging), Manifest{}, *lock);
    ASSERT_FALSE(committed);
    EXPECT_EQ(committed.error().code(), ENOSPC) << committed.error().message();
    EXPECT_NE(committed.error().message().find("No space left on device"), std::string::npos);
    auto latest = store.latest_verified("default", "job", *lock);
    ASSERT_TRUE(latest) << latest.error().message();
    EXPECT_EQ(latest->path, good);
  }
  EXPECT_TRUE(entries(key_dir(), "staging-").empty());
  EXPECT_EQ(entries(key_dir(), "ckpt-").size(), 1u);
  EXPECT_TRUE(entries(key_dir(), "failed-").empty());
}

// ---- seals -------------------------------------------------------------------------

// Rewrites a committed generation's manifest.json with `text` (as a planter would).
void replace_manifest(const std::string& dir, const std::string& text) {
  ASSERT_TRUE(write_file_atomic(dir + "/manifest.json", text, 0600));
}

TEST_F(CheckpointStoreTest, UnsealedForeignOrTamperedCheckpointsAreMovedAsideWithTheReason) {
  CheckpointStore store(base_.string(), /*keep=*/10, keys_);
  std::string good = commit(store, {{"pages.img", "good"}});
  auto foreign = generate_node_key();
  ASSERT_TRUE(foreign);
  struct Plant {
    std::string why;  // expected in the reason
    std::function<std::string(Manifest)> manifest;
  };
  std::vector<Plant> plants = {
      {"unsealed checkpoint (manifest format 1",
       [](Manifest m) {
         m.format_version = 1;
         m.seal = {};
         return serialize_manifest(m);
       }},
      {"unsealed checkpoint (no seal)",
       [](Manifest m) {
         m.seal = {};
         return serialize_manifest(m);
       }},
      {"which this node does not hold",
       [&](Manifest m) { return *seal_manifest(std::move(m), *foreign); }},
      {"MAC does not match",
       [](Manifest m) {
         m.container_id = "planted";  // recomputed by someone without the key
         return serialize_manifest(m);
       }},
  };
  for (const auto& plant : plants) {
    SCOPED_TRACE(plant.why);
    // A planted generation: real files, a manifest recomputed over them.
    std::string bad = commit(store, {{"pages.img", "evil payload"}});
    auto text = read_file(bad + "/manifest.json");
    ASSERT_TRUE(text);
    auto m = parse_manifest(*text);
    ASSERT_TRUE(m);
    replace_manifest(bad, plant.manifest(*m));
    auto lock = store.lock("default", "job");
    ASSERT_TRUE(lock);
    auto latest = store.latest_verified("default", "job", *lock);
    ASSERT_TRUE(latest) << latest.error().message();
    EXPECT_EQ(latest->path, good);
    ASSERT_EQ(latest->skipped.size(), 1u);
    EXPECT_NE(latest->skipped[0].find(plant.why), std::string::npos) << latest->skipped[0];
    EXPECT_FALSE(fs::exists(bad));
  }
  auto failed = entries(key_dir(), "failed-");
  ASSERT_EQ(failed.size(), plants.size());
  auto reason = read_file((key_dir() / failed.back() / "reason.txt").string());
  ASSERT_TRUE(reason);
  EXPECT_NE(reason->find("seal: "), std::string::npos) << *reason;
}

TEST_F(CheckpointStoreTest, AListShowsABadSealAsCorrupt) {
  CheckpointStore store(base_.string(), 2, keys_);
  std::string path = commit(store, {{"a", "1"}});
  auto text = read_file(path + "/manifest.json");
  ASSERT_TRUE(text);
  auto m = parse_manifest(*text);
  ASSERT_TRUE(m);
  m->node = "elsewhere";
  replace_manifest(path, serialize_manifest(*m));
  auto infos = store.list("default", "job");
  ASSERT_TRUE(infos);
  ASSERT_EQ(infos->size(), 1u);
  EXPECT_EQ((*infos)[0].state, CheckpointState::kCorrupt);
  EXPECT_NE((*infos)[0].reason.find("MAC does not match"), std::string::npos);
}

TEST_F(CheckpointStoreTest, WithoutAKeyNothingIsCommittedOrRestoredAndNothingMovedAside) {
  CheckpointStore sealed(base_.string(), 2, keys_);
  std::string path = commit(sealed, {{"a", "1"}});
  CheckpointStore keyless(base_.string(), 2, std::shared_ptr<const Keyring>{});
  auto lock = keyless.lock("default", "job");
  ASSERT_TRUE(lock);
  auto staging = keyless.begin(*lock);
  ASSERT_TRUE(staging);
  auto committed = keyless.commit(std::move(*staging), Manifest{}, *lock);
  ASSERT_FALSE(committed);
  EXPECT_NE(committed.error().message().find("archctl key init"), std::string::npos)
      << committed.error().message();
  auto latest = keyless.latest_verified("default", "job", *lock);
  ASSERT_FALSE(latest);
  EXPECT_EQ(latest.error().code(), ENOKEY);
  EXPECT_TRUE(fs::exists(path));
  EXPECT_TRUE(entries(key_dir(), "failed-").empty());
}

TEST_F(CheckpointStoreTest, AfterRotationTheOldKeyStillVerifiesAndTheNewOneSeals) {
  CheckpointStore before(base_.string(), /*keep=*/10, keys_);
  std::string old_gen = commit(before, {{"a", "old"}});
  auto fresh = generate_node_key();
  ASSERT_TRUE(fresh);
  auto rotated = std::make_shared<Keyring>(*keys_);
  rotated->add(*fresh, true);
  CheckpointStore after(base_.string(), /*keep=*/10, rotated);
  {
    auto lock = after.lock("default", "job");
    ASSERT_TRUE(lock);
    auto latest = after.latest_verified("default", "job", *lock);
    ASSERT_TRUE(latest) << latest.error().message();
    EXPECT_EQ(latest->path, old_gen);
    EXPECT_EQ(latest->manifest.seal.key_id, keys_->active()->id);
  }
  std::string new_gen = commit(after, {{"a", "new"}});
  auto lock = after.lock("default", "job");
  ASSERT_TRUE(lock);
  auto latest = after.latest_verified("default", "job", *lock);
  ASSERT_TRUE(latest);
  EXPECT_EQ(latest->path, new_gen);
  EXPECT_EQ(latest->manifest.seal.key_id, fresh->id);
  EXPECT_EQ(latest->manifest.format_version, kManifestFormatVersion);
}

TEST_F(CheckpointStoreTest, RemoveNeverFollowsASymlinkOrCrossesAMountPoint) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to bind-mount";
  CheckpointStore store(base_.string(), 2, keys_);
  std::string g1 = commit(store, {{"a", "1"}});
  fs::create_directories(root_ / "victim/sub");
  write(root_ / "victim/file", "precious");
  write(root_ / "victim/sub/file", "precious");
  // A symlink and a bind mount of the victim inside the generation.
  fs::create_directory_symlink(root_ / "victim", fs::path(g1) / "link");
  fs::create_directories(fs::path(g1) / "bound");
  ASSERT_EQ(::mount((root_ / "victim").c_str(), (fs::path(g1) / "bound").c_str(), nullptr, MS_BIND,
                    nullptr),
            0)
      << std::strerror(errno);
  {
    auto lock = store.lock("default", "job");
    ASSERT_TRUE(lock);
    auto removed = store.remove("default", "job", *lock);
    ASSERT_FALSE(removed);
    EXPECT_EQ(removed.error().code(), EXDEV) << removed.error().message();
  }
  EXPECT_EQ(read_file((root_ / "victim/file").string()).value_or(""), "precious");
  EXPECT_EQ(read_file((root_ / "victim/sub/file").string()).value_or(""), "precious");
  ::umount2((fs::path(g1) / "bound").c_str(), MNT_DETACH);
  {
    auto lock = store.lock("default", "job");
    ASSERT_TRUE(lock);
    ASSERT_TRUE(store.remove("default", "job", *lock));
  }
  EXPECT_EQ(read_file((root_ / "victim/file").string()).value_or(""), "precious");
  EXPECT_FALSE(fs::exists(key_dir()));
}

TEST_F(CheckpointStoreTest, BaseUnderARootIsWalkedWithoutSymlinks) {
  fs::create_directories(root_ / "elsewhere");
  ::chmod(root_.c_str(), 0755);
  fs::create_directory_symlink(root_ / "elsewhere", root_ / "sub");
  CheckpointStore store((root_ / "sub/store").string(), 2, root_.string());
  auto lock = store.lock("default", "job");
  ASSERT_FALSE(lock);
  EXPECT_TRUE(fs::is_empty(root_ / "elsewhere"));
  // A base outside its root is refused outright.
  CheckpointStore outside("/etc", 2, root_.string());
  auto no = outside.lock("default", "job");
  ASSERT_FALSE(no);
  EXPECT_EQ(no.error().code(), EPERM);
}

TEST_F(CheckpointStoreTest, AGroupWritableKeyDirectoryIsRefusedNotChmodded) {
  CheckpointStore store(base_.string(), 2, keys_);
  commit(store, {{"a", "1"}});
  ::chmod(key_dir().c_str(), 0777);
  auto lock = store.lock("default", "job");
  ASSERT_FALSE(lock);
  EXPECT_EQ(mode_of(key_dir()), 0777u);
}

}  // namespace
}  // namespace arch

namespace arch {
namespace {

TEST_F(CheckpointStoreTest, AFailedDumpKeepsOnlyItsLogsAndAtMostKeptOfThem) {
  CheckpointStore store(base_.string(), 2, keys_);
  // A failed restore's directory (moved aside, holds a manifest) is never pruned as a dump.
  std::string other = commit(store, {{"images/pages-1.img", "pages"}});
  std::string good = commit(store, {{"images/pages-1.img", "pages"}});
  ASSERT_FALSE(good.empty());
  auto lock = store.lock("default", "job");  // commit() locks by itself: only after it
  ASSERT_TRUE(lock);
  ASSERT_TRUE(store.move_aside(other, "restore failed", *lock));
  std::vector<std::string> kept;
  for (int i = 0; i < 4; ++i) {
    auto staging = store.begin(*lock);
    ASSERT_TRUE(staging);
    write(fs::path(staging->path()) / "images" / "pages-1.img", std::string(4096, 'x'));
    write(fs::path(staging->path()) / "criu" / "dump.log", "Error (x.c:1): boom");
    auto failed = store.keep_failed_dump(std::move(*staging), "dump failed " + std::to_string(i),
                                         {{"dump.log", "tail " + std::to_string(i)}}, 2, *lock);
    ASSERT_TRUE(failed) << failed.error().message();
    kept.push_back(*failed);
  }
  auto failed = entries(key_dir(), "failed-");
  ASSERT_EQ(failed.size(), 3u);  // the two newest dumps and the moved-aside checkpoint
  EXPECT_FALSE(fs::exists(kept[0]));
  EXPECT_FALSE(fs::exists(kept[1]));
  for (const auto& dir : {kept[2], kept[3]}) {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename());
    std::sort(names.begin(), names.end());
    EXPECT_EQ(names, (std::vector<std::string>{"dump-logs", "reason.txt"})) << dir;
  }
  EXPECT_EQ(read_file(kept[3] + "/dump-logs/dump.log").value(), "tail 3");
  EXPECT_EQ(read_file(kept[3] + "/reason.txt").value(), "dump failed 3\n");
  EXPECT_TRUE(entries(key_dir(), "staging-").empty());
  EXPECT_TRUE(fs::exists(good));  // the good generation is untouched
  auto listed = store.list("default", "job");
  ASSERT_TRUE(listed);
  EXPECT_EQ(std::count_if(listed->begin(), listed->end(),
                          [](const CheckpointInfo& c) { return c.state == CheckpointState::kFailed; }),
            3);

  // kept 0: nothing is kept, the staging directory is removed all the same.
  auto staging = store.begin(*lock);
  ASSERT_TRUE(staging);
  std::string path = staging->path();
  auto none = store.keep_failed_dump(std::move(*staging), "x", {}, 0, *lock);
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->empty());
  EXPECT_FALSE(fs::exists(path));
  // A log name cannot leave dump-logs/.
  staging = store.begin(*lock);
  ASSERT_TRUE(staging);
  EXPECT_FALSE(store.keep_failed_dump(std::move(*staging), "x", {{"../evil", "x"}}, 2, *lock));
  EXPECT_FALSE(fs::exists(key_dir() / "evil"));
}

}  // namespace
}  // namespace arch
