// StoreLayout: store paths and the hot-path existence check.
#include "store_layout.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "file_util.h"

namespace arch {

Result<std::string> store_base_for(const ArchEnv& env, const NodeConfig& config) {
  std::string_view host_path = env.get("ARCH_CHECKPOINT_HOST_PATH");
  if (host_path.empty()) return config.store_path;
  if (host_path.front() != '/') return fail("ARCH_CHECKPOINT_HOST_PATH must be an absolute path");
  if (host_path.find("/../") != std::string_view::npos || host_path.ends_with("/..")) {
    return fail("ARCH_CHECKPOINT_HOST_PATH must not contain '..'");
  }
  return std::string(host_path);
}

bool has_committed_checkpoint(const std::string& base, const std::string& ns,
                              const std::string& key) {
  if (!validate_name("namespace", ns) || !validate_name("key", key)) return false;
  std::string dir = base + "/" + ns + "/" + key;
  auto dfd = open_file(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  if (!dfd) return false;
  DIR* d = ::fdopendir(dfd->release());
  if (d == nullptr) return false;
  bool found = false;
  while (dirent* e = ::readdir(d)) {
    std::string_view name = e->d_name;
    if (!name.starts_with("ckpt-")) continue;
    struct stat st {};
    std::string manifest = std::string(name) + "/manifest.json";
    if (::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode) &&
        ::fstatat(::dirfd(d), manifest.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
        S_ISREG(st.st_mode)) {
      found = true;
      break;
    }
  }
  ::closedir(d);
  return found;
}

}  // namespace arch
