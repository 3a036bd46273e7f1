// Tests for FileLock: exclusion between threads and processes, timeouts, unlinked lock files.
#include "base/file_lock.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include "base/temp_dir.h"

namespace arch {
namespace {

using std::chrono::milliseconds;

class FileLockTest : public ::testing::Test {
 protected:
  void SetUp() override { path_ = tmp_ / "x.lock"; }
  TempDir tmp_{"arch-lock-"};
  std::string path_;
};

TEST_F(FileLockTest, CreatesTheFile0600AndHoldsIt) {
  auto lock = FileLock::acquire(path_);
  ASSERT_TRUE(lock) << lock.error().message();
  EXPECT_TRUE(lock->held());
  struct stat st {};
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_NE(::fcntl(lock->fd(), F_GETFD) & FD_CLOEXEC, 0);
}

TEST_F(FileLockTest, SecondLockFailsWhileHeldAndSucceedsAfterRelease) {
  auto first = FileLock::acquire(path_);
  ASSERT_TRUE(first);
  auto tried = FileLock::acquire(path_, milliseconds(0));
  ASSERT_FALSE(tried);
  EXPECT_EQ(tried.error().code(), EWOULDBLOCK);
  auto start = std::chrono::steady_clock::now();
  auto timed = FileLock::acquire(path_, milliseconds(50));
  ASSERT_FALSE(timed);
  EXPECT_EQ(timed.error().code(), ETIMEDOUT);
  EXPECT_GE(std::chrono::steady_clock::now() - start, milliseconds(50));

  FileLock moved = std::move(*first);
  EXPECT_FALSE(first->held());
  EXPECT_FALSE(FileLock::acquire(path_, milliseconds(0)));
  moved.release();
  EXPECT_TRUE(FileLock::acquire(path_, milliseconds(0)));
}

TEST_F(FileLockTest, BlockingWaiterGetsItWhenTheHolderLetsGo) {
  auto first = FileLock::acquire(path_);
  ASSERT_TRUE(first);
  std::atomic<bool> released{false};
  std::atomic<bool> got_before_release{false};
  std::thread waiter([&] {
    auto second = FileLock::acquire(path_);
    if (!released) got_before_release = true;
    EXPECT_TRUE(second);
  });
  std::this_thread::sleep_for(milliseconds(100));
  released = true;
  first->release();
  waiter.join();
  EXPECT_FALSE(got_before_release);
}

TEST_F(FileLockTest, ExcludesAnotherProcess) {
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto lock = FileLock::acquire(path_);
    char c = lock ? 'y' : 'n';
    (void)!::write(ready[1], &c, 1);
    ::usleep(200 * 1000);
    ::_exit(0);  // exit releases the lock with the fd
  }
  ::close(ready[1]);
  char c = 0;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ::close(ready[0]);
  ASSERT_EQ(c, 'y');
  EXPECT_FALSE(FileLock::acquire(path_, milliseconds(0)));
  auto waited = FileLock::acquire(path_, milliseconds(5000));
  EXPECT_TRUE(waited) << waited.error().message();
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
}

TEST_F(FileLockTest, WaiterRelocksWhenTheHolderUnlinksTheFile) {
  auto first = FileLock::acquire(path_);
  ASSERT_TRUE(first);
  std::optional<Result<FileLock>> second;
  std::thread waiter([&] { second = FileLock::acquire(path_); });
  std::this_thread::sleep_for(milliseconds(50));
  ASSERT_EQ(::unlink(path_.c_str()), 0);
  first->release();
  waiter.join();
  ASSERT_TRUE(*second);
  // The waiter holds the file now at the path, so a newcomer is excluded.
  struct stat held {};
  struct stat at_path {};
  ASSERT_EQ(::fstat((*second)->fd(), &held), 0);
  ASSERT_EQ(::stat(path_.c_str(), &at_path), 0);
  EXPECT_EQ(held.st_ino, at_path.st_ino);
  EXPECT_FALSE(FileLock::acquire(path_, milliseconds(0)));
}

TEST_F(FileLockTest, RefusesASymlink) {
  auto target = tmp_ / "target";
  ASSERT_EQ(::symlink(target.c_str(), path_.c_str()), 0);
  auto lock = FileLock::acquire(path_);
  ASSERT_FALSE(lock);
  EXPECT_EQ(lock.error().code(), ELOOP);
  EXPECT_FALSE(std::filesystem::exists(target));
}

}  // namespace
}  // namespace arch
