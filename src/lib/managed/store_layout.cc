// StoreLayout: store paths and the hot-path existence check.
#include "managed/store_layout.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "base/file_util.h"

namespace arch {

namespace {

// An absolute path without "." or ".." components, with repeated and trailing '/' removed.
Result<std::string> clean_absolute(std::string_view variable, std::string_view path) {
  if (path.empty() || path.front() != '/') {
    return fail(std::string(variable) + " must be an absolute path");
  }
  std::string out;
  std::size_t pos = 0;
  while (pos < path.size()) {
    std::size_t next = path.find('/', pos);
    if (next == std::string_view::npos) next = path.size();
    std::string_view part = path.substr(pos, next - pos);
    if (part == "." || part == "..") {
      return fail(std::string(variable) + " must not contain '.' or '..' components");
    }
    if (!part.empty()) {
      out += '/';
      out += part;
    }
    pos = next + 1;
  }
  return out.empty() ? std::string("/") : out;
}

}  // namespace

Result<std::string> store_base_for(const ArchEnv& env, const NodeConfig& config) {
  if (auto shared = env.get("ARCH_SHAREDFS_HOST_PATH"); !shared.empty()) {
    auto base = clean_absolute("ARCH_SHAREDFS_HOST_PATH", shared);
    if (!base) return base;
    return (*base == "/" ? std::string() : *base) + "/checkpoint";
  }
  std::string_view host_path = env.get("ARCH_CHECKPOINT_HOST_PATH");
  if (host_path.empty()) return config.store_path;
  return clean_absolute("ARCH_CHECKPOINT_HOST_PATH", host_path);
}

Result<std::optional<SharedWorkdir>> shared_workdir_for(const ArchEnv& env, const std::string& ns,
                                                        const std::string& key) {
  std::string_view shared = env.get("ARCH_SHAREDFS_HOST_PATH");
  std::string_view inside = env.get("ARCH_WORKDIR_CONTAINER_PATH");
  if (shared.empty() || inside.empty()) return std::optional<SharedWorkdir>();
  auto base = clean_absolute("ARCH_SHAREDFS_HOST_PATH", shared);
  if (!base) return std::unexpected(base.error());
  auto dest = clean_absolute("ARCH_WORKDIR_CONTAINER_PATH", inside);
  if (!dest) return std::unexpected(dest.error());
  if (*dest == "/") return fail("ARCH_WORKDIR_CONTAINER_PATH must not be /");
  if (auto ok = validate_name("namespace", ns); !ok) return std::unexpected(ok.error());
  if (auto ok = validate_name("key", key); !ok) return std::unexpected(ok.error());
  std::string root = *base == "/" ? std::string() : *base;
  return SharedWorkdir{*base, root + "/work/" + ns + "/" + key, *dest};
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
