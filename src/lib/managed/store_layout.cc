// StoreLayout: allowed roots, store paths and the hot-path existence check.
#include "managed/store_layout.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "base/beneath.h"
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

std::string roots_list(const NodeConfig& config) {
  std::string out;
  for (const auto& r : allowed_roots(config)) {
    out += (out.empty() ? "" : ", ") + r.name + " = " + r.path;
  }
  return out;
}

std::unexpected<Error> not_allowed(const NodeConfig& config, const std::string& what) {
  return std::unexpected(
      Error(ErrorKind::kPermission, what +
                                        " is not an allowed store root nor under one (the node "
                                        "allows: " +
                                        roots_list(config) + ")"));
}

// The allowed root named `name`.
Result<StoreRoot> root_named(const NodeConfig& config, std::string_view variable,
                             std::string_view name) {
  for (const auto& r : allowed_roots(config)) {
    if (r.name == name) return r;
  }
  return not_allowed(config, std::string(variable) + "=" + std::string(name));
}

// The most specific allowed root holding the host path in `variable`.
Result<std::pair<StoreRoot, std::string>> root_holding(const NodeConfig& config,
                                                       std::string_view variable,
                                                       std::string_view value) {
  auto path = clean_absolute(variable, value);
  if (!path) return std::unexpected(path.error());
  const StoreRoot* best = nullptr;
  auto roots = allowed_roots(config);
  for (const auto& r : roots) {
    if (path_is_under(*path, r.path) && (best == nullptr || r.path.size() > best->path.size()))
      best = &r;
  }
  if (best == nullptr) return not_allowed(config, std::string(variable) + "=" + *path);
  return std::pair{*best, *path};
}

}  // namespace

std::string relative_to_root(const std::string& path, const std::string& root) {
  if (path.size() <= root.size()) return {};
  return path.substr(root == "/" ? 1 : root.size() + 1);
}

Result<StorePlace> store_place_for(const ArchEnv& env, const NodeConfig& config) {
  auto place_in = [](const StoreRoot& r, const std::string& dir, bool shared) {
    std::string sub = dir == "/" ? std::string() : dir;
    return StorePlace{r.path, r.name, shared ? sub + "/checkpoint" : dir, shared ? dir : ""};
  };
  if (auto name = env.get("ARCH_SHAREDFS"); !name.empty()) {
    auto r = root_named(config, "ARCH_SHAREDFS", name);
    if (!r) return std::unexpected(r.error());
    return place_in(*r, r->path, true);
  }
  if (auto shared = env.get("ARCH_SHAREDFS_HOST_PATH"); !shared.empty()) {
    auto r = root_holding(config, "ARCH_SHAREDFS_HOST_PATH", shared);
    if (!r) return std::unexpected(r.error());
    return place_in(r->first, r->second, true);
  }
  if (auto name = env.get("ARCH_STORE"); !name.empty()) {
    auto r = root_named(config, "ARCH_STORE", name);
    if (!r) return std::unexpected(r.error());
    return place_in(*r, r->path, false);
  }
  if (auto host = env.get("ARCH_CHECKPOINT_HOST_PATH"); !host.empty()) {
    auto r = root_holding(config, "ARCH_CHECKPOINT_HOST_PATH", host);
    if (!r) return std::unexpected(r.error());
    return place_in(r->first, r->second, false);
  }
  return StorePlace{config.store_path, kLocalRootName, config.store_path, ""};
}

Result<void> check_store_place(const StorePlace& place) {
  auto refuse = [](const Error& e) { return std::unexpected(e.with_kind(ErrorKind::kPermission)); };
  auto root = open_trusted_root(place.root);
  if (!root) {
    if (root.error().code() == ENOENT && place.root == place.base) return {};  // Made later.
    return refuse(root.error().wrap("store root"));
  }
  std::string rel = relative_to_root(place.base, place.root);
  UniqueFd dir = std::move(*root);
  std::string shown = place.root;
  std::size_t pos = 0;
  while (pos < rel.size()) {
    std::size_t next = rel.find('/', pos);
    if (next == std::string::npos) next = rel.size();
    std::string part = rel.substr(pos, next - pos);
    pos = next + 1;
    auto sub = open_trusted_path(dir.get(), part, shown);
    shown += "/" + part;
    if (!sub) {
      if (sub.error().code() == ENOENT) return {};
      return refuse(sub.error());
    }
    dir = std::move(*sub);
  }
  return {};
}

Result<std::optional<SharedWorkdir>> shared_workdir_for(const StorePlace& place, const ArchEnv& env,
                                                        const std::string& owner,
                                                        const std::string& key) {
  std::string_view inside = env.get("ARCH_WORKDIR_CONTAINER_PATH");
  if (place.shared.empty() || inside.empty()) return std::optional<SharedWorkdir>();
  auto dest = clean_absolute("ARCH_WORKDIR_CONTAINER_PATH", inside);
  if (!dest) return std::unexpected(dest.error());
  if (*dest == "/") return fail("ARCH_WORKDIR_CONTAINER_PATH must not be /");
  if (auto ok = validate_owner(owner); !ok) return std::unexpected(ok.error());
  if (auto ok = validate_name("key", key); !ok) return std::unexpected(ok.error());
  std::string root = place.shared == "/" ? std::string() : place.shared;
  return SharedWorkdir{place.root, place.shared, root + "/work/" + owner + "/" + key, *dest, {}};
}

bool has_committed_checkpoint(const std::string& root, const std::string& base,
                              const std::string& owner, const std::string& key) {
  if (!validate_owner(owner) || !validate_name("key", key)) return false;
  if (!path_is_under(base, root)) return false;
  auto rfd = open_file(root, O_RDONLY | O_DIRECTORY);
  if (!rfd) return false;
  std::string rel = relative_to_root(base, root);
  rel += (rel.empty() ? "" : "/") + owner + "/" + key;
  auto dfd = open_dir_beneath(rfd->get(), rel, base + "/" + owner + "/" + key);
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
