// RuntimePath: resolving and vetting the real runc.
#include "runtime/runtime_path.h"

#include <sys/stat.h>
#include <unistd.h>

namespace arch {

Result<void> check_runtime_binary(const std::string& path, const std::string& self) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return fail_errno("stat " + path);
  if (!S_ISREG(st.st_mode)) return fail(path + " is not a regular file");
  if ((st.st_mode & S_IXUSR) == 0) return fail(path + " is not executable");
  if (st.st_uid != 0) return fail(path + " is not owned by root");
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0)
    return fail(path + " is writable by group or others");
  struct stat me {};
  if (::stat(self.c_str(), &me) == 0 && me.st_dev == st.st_dev && me.st_ino == st.st_ino) {
    return fail(path + " is arch-runc itself (it would call itself forever)");
  }
  return {};
}

Result<std::string> resolve_runtime(const NodeConfig& config, const std::string& self) {
  if (!config.runc.empty()) {
    if (auto ok = check_runtime_binary(config.runc, self); !ok) {
      return std::unexpected(ok.error().wrap("[runtime] runc"));
    }
    return config.runc;
  }
  std::string tried;
  for (const char* candidate : kDefaultRuncPaths) {
    auto ok = check_runtime_binary(candidate, self);
    if (ok) return std::string(candidate);
    if (ok.error().code() != ENOENT) {
      tried += tried.empty() ? "" : "; ";
      tried += ok.error().message();
    }
  }
  return fail("no usable runc found (set [runtime] runc in the node config)" +
              (tried.empty() ? std::string() : ": " + tried));
}

}  // namespace arch
