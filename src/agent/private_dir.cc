// PrivateDir: mkdir -p with 0700 for what is created, and the ownership check.
#include "private_dir.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

namespace arch::agent {

Result<void> make_private_dirs(const std::string& dir) {
  if (dir.empty() || dir.front() != '/') return fail("not an absolute directory: " + dir);
  for (std::size_t pos = 1; pos != std::string::npos;) {
    pos = dir.find('/', pos + 1);
    std::string part = dir.substr(0, pos);
    if (::mkdir(part.c_str(), 0700) != 0 && errno != EEXIST) return fail_errno("mkdir " + part);
  }
  return {};
}

Result<void> check_private_dir(const std::string& dir) {
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) return fail_errno("lstat " + dir);
  if (!S_ISDIR(st.st_mode)) return fail(dir + " is not a directory");
  if (st.st_uid != ::geteuid())
    return fail(dir + " is not owned by uid " + std::to_string(::geteuid()));
  if ((st.st_mode & 022) != 0) return fail(dir + " is writable by group or others");
  return {};
}

}  // namespace arch::agent
