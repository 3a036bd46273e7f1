// FileLock: an exclusive flock(2) on a lock file, held by an owned fd and released with it.
#pragma once

#include <chrono>
#include <optional>
#include <string>

#include "base/error.h"
#include "base/unique_fd.h"

namespace arch {

/// How long to wait for a lock someone else holds: std::nullopt waits without limit,
/// zero tries once, anything else polls every 10 ms until it runs out.
using LockTimeout = std::optional<std::chrono::milliseconds>;

/// An exclusive lock on a file (flock LOCK_EX), released when the object is destroyed.
/// flock locks belong to the open file, so two FileLocks on one path exclude each other
/// in one process as well as across processes. Move-only.
class FileLock {
 public:
  /// A lock that holds nothing.
  FileLock() = default;

  /// Opens `path` (created 0600 if missing; a symlink is refused) and locks it.
  /// Errors: EWOULDBLOCK when a zero timeout finds it held, ETIMEDOUT when a timeout runs out.
  static Result<FileLock> acquire(const std::string& path, LockTimeout timeout = std::nullopt);

  /// Same, for `name` inside the directory `dirfd`. A lock file that its previous holder
  /// unlinked while we waited is reopened, so the lock we return is on the linked file;
  /// ENOENT means the directory itself is gone.
  static Result<FileLock> acquire_at(int dirfd, const std::string& name,
                                     LockTimeout timeout = std::nullopt);

  /// Whether the lock is held.
  [[nodiscard]] bool held() const { return fd_.valid(); }
  /// The locked file's fd (-1 when nothing is held).
  [[nodiscard]] int fd() const { return fd_.get(); }
  /// Releases the lock now (closing the fd does it).
  void release() { fd_.reset(); }

 private:
  explicit FileLock(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

}  // namespace arch
