// FileLock: flock(LOCK_EX), blocking, polled against a deadline, or tried once.
//
// A holder may unlink the lock file before releasing it (the store does, when it removes a
// key). Whoever was waiting then holds a lock on a dead inode while a newcomer creates a
// fresh file, and both would think they own the lock. So after locking we check that the
// file is still linked (st_nlink > 0) and start over if it is not.
#include "base/file_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <cerrno>
#include <thread>

#include "base/file_util.h"

namespace arch {
namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kPollInterval = std::chrono::milliseconds(10);

Result<UniqueFd> open_lock_file(int dirfd, const std::string& name) {
  int fd = retry_eintr([&] {
    return ::openat(dirfd, name.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
  });
  if (fd < 0) return fail_errno("open lock file " + name);
  return UniqueFd(fd);
}

// Takes the lock on `fd`, waiting until `deadline` (if any).
Result<void> lock_fd(int fd, const std::string& name, LockTimeout timeout,
                     Clock::time_point deadline) {
  if (!timeout) {
    if (retry_eintr([&] { return ::flock(fd, LOCK_EX); }) != 0) {
      return fail_errno("flock " + name);
    }
    return {};
  }
  for (;;) {
    if (retry_eintr([&] { return ::flock(fd, LOCK_EX | LOCK_NB); }) == 0) return {};
    if (errno != EWOULDBLOCK) return fail_errno("flock " + name);
    auto now = Clock::now();
    if (timeout->count() <= 0) {
      return std::unexpected(Error("lock " + name + ": held by another process", EWOULDBLOCK));
    }
    if (now >= deadline) {
      return std::unexpected(Error("lock " + name + ": still held by another process after " +
                                       std::to_string(timeout->count()) + " ms",
                                   ETIMEDOUT));
    }
    std::this_thread::sleep_for(std::min<Clock::duration>(kPollInterval, deadline - now));
  }
}

}  // namespace

Result<FileLock> FileLock::acquire_at(int dirfd, const std::string& name, LockTimeout timeout) {
  auto deadline = Clock::now() + (timeout ? *timeout : std::chrono::milliseconds(0));
  for (;;) {
    auto fd = open_lock_file(dirfd, name);
    if (!fd) return std::unexpected(fd.error());
    if (auto locked = lock_fd(fd->get(), name, timeout, deadline); !locked) {
      return std::unexpected(locked.error());
    }
    struct stat st {};
    if (::fstat(fd->get(), &st) != 0) return fail_errno("fstat lock file " + name);
    if (st.st_nlink > 0) return FileLock(std::move(*fd));
    // Unlinked by the holder we waited for: lock the file that is there now.
  }
}

Result<FileLock> FileLock::acquire(const std::string& path, LockTimeout timeout) {
  auto slash = path.find_last_of('/');
  std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  auto dir = open_file(dirname_of(path), O_RDONLY | O_DIRECTORY);
  if (!dir) return std::unexpected(dir.error());
  auto lock = acquire_at(dir->get(), name, timeout);
  if (!lock) return std::unexpected(lock.error().wrap(path));
  return lock;
}

}  // namespace arch
