// Beneath: openat2-based walks below a trusted root (see beneath.h).
#include "base/beneath.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "base/file_util.h"

namespace arch {

Result<void> check_trusted_dir(int fd, const std::string& shown) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return fail_errno("stat " + shown);
  if (!S_ISDIR(st.st_mode)) return std::unexpected(Error(shown + ": not a directory", ENOTDIR));
  if (st.st_uid != ::geteuid()) {
    return std::unexpected(Error(shown + ": owned by uid " + std::to_string(st.st_uid) +
                                     ", not by root (uid " + std::to_string(::geteuid()) +
                                     "); refusing to use it",
                                 EPERM));
  }
  if ((st.st_mode & 022) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", st.st_mode & 07777);
    return std::unexpected(Error(
        shown + ": writable by group or others (mode " + mode + "); refusing to use it", EPERM));
  }
  return {};
}

Result<UniqueFd> open_trusted_root(const std::string& path) {
  if (path.empty() || path.front() != '/') return fail("root " + path + " is not absolute");
  auto fd = open_file(path, O_RDONLY | O_DIRECTORY);
  if (!fd) return fd;
  if (auto ok = check_trusted_dir(fd->get(), path); !ok) return std::unexpected(ok.error());
  return fd;
}

Result<UniqueFd> open_dir_beneath(int dirfd, std::string_view name, const std::string& shown) {
  open_how how{};
  how.flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  std::string n(name);
  long fd = retry_eintr([&] { return ::syscall(SYS_openat2, dirfd, n.c_str(), &how, sizeof how); });
  if (fd < 0) {
    if (errno == ELOOP) {
      // ENOTDIR, as openat(O_DIRECTORY | O_NOFOLLOW) reports a symlink.
      return std::unexpected(Error(shown + ": a symlink (never followed here)", ENOTDIR));
    }
    return fail_errno("open " + shown);
  }
  return UniqueFd(static_cast<int>(fd));
}

Result<UniqueFd> open_trusted_path(int root_fd, std::string_view rel, const std::string& shown,
                                   const BeneathOptions& options) {
  int dup = ::fcntl(root_fd, F_DUPFD_CLOEXEC, 0);
  if (dup < 0) return fail_errno("dup " + shown);
  UniqueFd dir(dup);
  std::string where = shown;
  std::size_t pos = 0;
  while (pos < rel.size()) {
    std::size_t next = rel.find('/', pos);
    if (next == std::string_view::npos) next = rel.size();
    std::string part(rel.substr(pos, next - pos));
    pos = next + 1;
    if (part.empty()) continue;
    if (part == "." || part == "..") return fail(shown + "/" + std::string(rel) + ": '.' or '..'");
    where += "/" + part;
    bool created = false;
    if (options.create) {
      created = ::mkdirat(dir.get(), part.c_str(), options.mode) == 0;
      if (!created && errno != EEXIST) return fail_errno("mkdir " + where);
    }
    auto next_fd = open_dir_beneath(dir.get(), part, where);
    if (!next_fd) return next_fd;
    if (!created) {
      if (auto ok = check_trusted_dir(next_fd->get(), where); !ok) {
        return std::unexpected(ok.error());
      }
    }
    dir = std::move(*next_fd);
  }
  return dir;
}

Result<uint64_t> mount_id_of(int fd) {
  struct statx stx {};
  if (::statx(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, STATX_MNT_ID, &stx) != 0) {
    return fail_errno("statx");
  }
  if ((stx.stx_mask & STATX_MNT_ID) != 0) return stx.stx_mnt_id;
  return (static_cast<uint64_t>(stx.stx_dev_major) << 32) | stx.stx_dev_minor;
}

bool path_is_under(std::string_view path, std::string_view root) {
  while (root.size() > 1 && root.back() == '/') root.remove_suffix(1);
  if (root == "/") return !path.empty() && path.front() == '/';
  if (!path.starts_with(root)) return false;
  return path.size() == root.size() || path[root.size()] == '/';
}

}  // namespace arch
