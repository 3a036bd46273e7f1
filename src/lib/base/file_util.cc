// File helpers: EINTR-safe reads and writes, bounded whole-file reads, durable atomic writes.
#include "base/file_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <memory>

namespace arch {

Result<UniqueFd> open_file(const std::string& path, int flags, mode_t mode) {
  int fd = retry_eintr([&] { return ::open(path.c_str(), flags | O_CLOEXEC, mode); });
  if (fd < 0) return fail_errno("open " + path);
  return UniqueFd(fd);
}

Result<std::string> read_all(int fd, std::size_t max_bytes) {
  std::string out;
  char buf[8192];
  for (;;) {
    ssize_t n = retry_eintr([&] { return ::read(fd, buf, sizeof buf); });
    if (n < 0) return fail_errno("read");
    if (n == 0) break;
    if (out.size() + static_cast<std::size_t>(n) > max_bytes) {
      return std::unexpected(
          Error("read: file larger than " + std::to_string(max_bytes) + " bytes", EFBIG));
    }
    out.append(buf, static_cast<std::size_t>(n));
  }
  return out;
}

Result<std::string> read_file(const std::string& path, std::size_t max_bytes) {
  auto fd = open_file(path, O_RDONLY);
  if (!fd) return std::unexpected(fd.error());
  auto data = read_all(fd->get(), max_bytes);
  if (!data) return std::unexpected(data.error().wrap(path));
  return data;
}

Result<void> write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = retry_eintr([&] { return ::write(fd, data.data(), data.size()); });
    if (n < 0) return fail_errno("write");
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return {};
}

Result<std::vector<std::string>> list_directory(int dirfd) {
  int dup = ::fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
  if (dup < 0) return fail_errno("dup directory fd");
  DIR* dir = ::fdopendir(dup);
  if (dir == nullptr) {
    ::close(dup);
    return fail_errno("fdopendir");
  }
  std::unique_ptr<DIR, int (*)(DIR*)> closer(dir, ::closedir);
  ::rewinddir(dir);
  std::vector<std::string> names;
  for (;;) {
    errno = 0;
    const dirent* entry = ::readdir(dir);
    if (entry == nullptr) {
      if (errno != 0) return fail_errno("readdir");
      break;
    }
    std::string_view name = entry->d_name;
    if (name != "." && name != "..") names.emplace_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

namespace {

Result<void> empty_dirfd(int dfd, const std::string& where) {
  auto names = list_directory(dfd);
  if (!names) return std::unexpected(names.error().wrap(where));
  for (const auto& name : *names) {
    struct stat st {};
    if (::fstatat(dfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    if (S_ISDIR(st.st_mode)) {
      int child = ::openat(dfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (child < 0) return fail_errno("open " + where + "/" + name);
      UniqueFd owned(child);
      if (auto ok = empty_dirfd(child, where + "/" + name); !ok) return ok;
      if (::unlinkat(dfd, name.c_str(), AT_REMOVEDIR) != 0)
        return fail_errno("rmdir " + where + "/" + name);
    } else if (::unlinkat(dfd, name.c_str(), 0) != 0) {
      return fail_errno("unlink " + where + "/" + name);
    }
  }
  return {};
}

}  // namespace

Result<void> remove_directory_contents(const std::string& dir) {
  auto dfd = open_file(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  if (!dfd) return std::unexpected(dfd.error());
  return empty_dirfd(dfd->get(), dir);
}

std::string dirname_of(const std::string& path) {
  auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

Result<void> write_file_atomic(const std::string& path, std::string_view data, mode_t mode) {
  std::string tmp = path + ".tmp.XXXXXX";
  int raw = ::mkostemp(tmp.data(), O_CLOEXEC);
  if (raw < 0) return fail_errno("mkstemp " + tmp);
  UniqueFd fd(raw);
  auto cleanup_fail = [&](Error e) {
    ::unlink(tmp.c_str());
    return std::unexpected(std::move(e));
  };
  if (::fchmod(fd.get(), mode) != 0) return cleanup_fail(errno_error("fchmod " + tmp));
  if (auto w = write_all(fd.get(), data); !w) return cleanup_fail(w.error().wrap(tmp));
  if (::fsync(fd.get()) != 0) return cleanup_fail(errno_error("fsync " + tmp));
  fd.reset();
  if (::rename(tmp.c_str(), path.c_str()) != 0) return cleanup_fail(errno_error("rename " + tmp));
  auto dir = open_file(dirname_of(path), O_RDONLY | O_DIRECTORY);
  if (!dir) return std::unexpected(dir.error());
  if (::fsync(dir->get()) != 0) return fail_errno("fsync " + dirname_of(path));
  return {};
}

}  // namespace arch
