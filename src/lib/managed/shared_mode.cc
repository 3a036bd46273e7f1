// SharedMode: work directory on the shared filesystem, mount point in the rootfs, spec edit.
#include "managed/shared_mode.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/beneath.h"
#include "base/file_util.h"
#include "base/names.h"
#include "managed/container_registry.h"

namespace arch {
namespace {

// The components of an absolute, clean path ("/a/b" -> {"a", "b"}).
std::vector<std::string> components(const std::string& path) {
  std::vector<std::string> out;
  std::size_t pos = 1;
  while (pos < path.size()) {
    std::size_t next = path.find('/', pos);
    if (next == std::string::npos) next = path.size();
    if (next > pos) out.push_back(path.substr(pos, next - pos));
    pos = next + 1;
  }
  return out;
}

// The host id for container id `id` through the spec's mappings (none: the same id).
Result<unsigned> map_id(const nlohmann::json& spec, const char* which, unsigned id) {
  auto linux_it = spec.find("linux");
  if (linux_it == spec.end() || !linux_it->is_object()) return id;
  auto maps = linux_it->find(which);
  if (maps == linux_it->end() || !maps->is_array() || maps->empty()) return id;
  for (const auto& m : *maps) {
    unsigned inside = m.value("containerID", 0U), host = m.value("hostID", 0U),
             size = m.value("size", 0U);
    if (id >= inside && id - inside < size) return host + (id - inside);
  }
  return fail(std::string("config.json: ") + which + " do not map id " + std::to_string(id));
}

// Opens <shared>/work/<owner>/<key> from the allowed root: every directory down to
// work/<owner> trusted (or created 0711), the key's directory created owned by uid:gid
// (0750) or opened as it is, never through a symlink.
Result<UniqueFd> open_host_workdir(const SharedWorkdir& wd, unsigned uid, unsigned gid) {
  auto root = open_trusted_root(wd.root);
  if (!root) return std::unexpected(root.error().wrap("shared filesystem root"));
  std::string shared_rel = relative_to_root(wd.shared, wd.root);
  auto shared = open_trusted_path(root->get(), shared_rel, wd.root);
  if (!shared) {
    if (shared.error().code() == ENOENT) {
      return fail(wd.shared +
                  " is not an accessible directory (is the shared filesystem mounted?)");
    }
    return std::unexpected(shared.error());
  }
  std::string rest = relative_to_root(wd.host, wd.shared);  // work/<owner>/<key>
  auto slash = rest.find_last_of('/');
  auto parent = open_trusted_path(shared->get(), rest.substr(0, slash), wd.shared,
                                  BeneathOptions{.create = true, .mode = 0711});
  if (!parent) return std::unexpected(parent.error());
  std::string key = rest.substr(slash + 1);
  bool created = ::mkdirat(parent->get(), key.c_str(), 0750) == 0;
  if (!created && errno != EEXIST) return fail_errno("mkdir " + wd.host);
  auto dir = open_dir_beneath(parent->get(), key, wd.host);
  if (!dir) return dir;
  if (created && ::fchown(dir->get(), uid, gid) != 0) {
    return fail_errno("chown " + wd.host + " to " + std::to_string(uid) + ":" +
                      std::to_string(gid));
  }
  return dir;
}

// mkdir -p of a root-only directory chain (ARCH's state dir is the node's, root-only).
Result<void> make_private_dirs(const std::string& path) {
  for (std::size_t pos = 1; pos <= path.size(); ++pos) {
    if (pos != path.size() && path[pos] != '/') continue;
    std::string prefix = path.substr(0, pos);
    if (::mkdir(prefix.c_str(), 0700) != 0 && errno != EEXIST) return fail_errno("mkdir " + prefix);
  }
  return {};
}

// Unmounts everything stacked on `path` (lazily: a container may still hold a copy).
void unmount_all(const std::string& path) {
  for (int i = 0; i < 16 && ::umount2(path.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) == 0; ++i) {
  }
}

// Binds the directory open on `fd` onto `target` (a fresh, root-only directory).
Result<void> bind_fd(int fd, const std::string& target) {
  if (auto ok = make_private_dirs(dirname_of(target)); !ok) return ok;
  unmount_all(target);  // A stale bind of an earlier container with this id.
  if (::mkdir(target.c_str(), 0700) != 0 && errno != EEXIST) return fail_errno("mkdir " + target);
  struct stat st {};
  if (::lstat(target.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return fail(target + ": not a directory");
  }
  std::string source = "/proc/self/fd/" + std::to_string(fd);
  if (::mount(source.c_str(), target.c_str(), nullptr, MS_BIND, nullptr) != 0) {
    return fail_errno("bind the work directory onto " + target);
  }
  // Mounts made later below the share do not follow into the bind, and the bind does not
  // spread to other mount namespaces.
  (void)::mount(nullptr, target.c_str(), nullptr, MS_PRIVATE, nullptr);
  return {};
}

// Creates `path` (absolute, clean) inside the rootfs, resolving as if the rootfs were "/".
Result<void> make_mount_point(const std::string& rootfs, const std::string& path) {
  int fd = retry_eintr([&] { return ::open(rootfs.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); });
  if (fd < 0) return fail_errno("open rootfs " + rootfs);
  UniqueFd root(fd);
  std::string so_far;
  for (const auto& part : components(path)) {
    std::string parent = so_far.empty() ? std::string(".") : so_far;
    open_how how{};
    how.flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
    how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
    long pfd = retry_eintr(
        [&] { return ::syscall(SYS_openat2, root.get(), parent.c_str(), &how, sizeof how); });
    if (pfd < 0) return fail_errno("open " + parent + " in the rootfs");
    UniqueFd parent_fd(static_cast<int>(pfd));
    if (::mkdirat(parent_fd.get(), part.c_str(), 0755) != 0 && errno != EEXIST) {
      return fail_errno("mkdir " + so_far + "/" + part + " in the rootfs");
    }
    so_far += "/" + part;
  }
  return {};
}

}  // namespace

Result<std::string> add_workdir_to_spec(std::string_view config_json,
                                        const SharedWorkdir& workdir) {
  auto spec = nlohmann::json::parse(config_json, nullptr, false);
  if (spec.is_discarded() || !spec.is_object()) return fail("config.json is not a JSON object");
  auto& mounts = spec["mounts"];
  if (mounts.is_null()) mounts = nlohmann::json::array();
  if (!mounts.is_array()) return fail("config.json: mounts is not an array");
  for (const auto& m : mounts) {
    if (!m.is_object() || m.value("destination", "") != workdir.container) continue;
    if (m.value("source", "") == workdir.mount) return spec.dump(2);  // Already ours.
    return fail("the spec already mounts " + m.value("source", std::string("something")) +
                " at ARCH_WORKDIR_CONTAINER_PATH " + workdir.container);
  }
  mounts.push_back({{"destination", workdir.container},
                    {"type", "bind"},
                    {"source", workdir.mount},
                    {"options", {"rbind", "rw", "nosuid", "nodev"}}});
  auto& process = spec["process"];
  if (process.is_null()) return fail("config.json has no process");
  if (!process.is_object()) return fail("config.json: process is not an object");
  process["cwd"] = workdir.container;
  return spec.dump(2);
}

Result<void> apply_shared_workdir(const std::string& bundle, const std::string& rootfs,
                                  const SharedWorkdir& workdir) {
  std::string path = bundle + "/config.json";
  auto text = read_file(path, 64 << 20);
  if (!text) return std::unexpected(text.error());
  auto spec = nlohmann::json::parse(*text, nullptr, false);
  if (spec.is_discarded() || !spec.is_object()) return fail(path + ": not valid JSON");
  unsigned uid = 0, gid = 0;
  if (auto p = spec.find("process"); p != spec.end() && p->is_object()) {
    if (auto u = p->find("user"); u != p->end() && u->is_object()) {
      uid = u->value("uid", 0U);
      gid = u->value("gid", 0U);
    }
  }
  auto host_uid = map_id(spec, "uidMappings", uid);
  if (!host_uid) return std::unexpected(host_uid.error());
  auto host_gid = map_id(spec, "gidMappings", gid);
  if (!host_gid) return std::unexpected(host_gid.error());
  if (workdir.mount.empty()) return fail("shared work directory: no mount path");
  auto dir = open_host_workdir(workdir, *host_uid, *host_gid);
  if (!dir) return std::unexpected(dir.error());
  auto edited = add_workdir_to_spec(*text, workdir);
  if (!edited) return std::unexpected(edited.error().wrap(path));
  if (auto ok = make_mount_point(rootfs, workdir.container); !ok) return ok;
  if (auto ok = bind_fd(dir->get(), workdir.mount); !ok) return ok;
  struct stat st {};
  mode_t mode = ::stat(path.c_str(), &st) == 0 ? (st.st_mode & 07777) : 0644;
  auto written = write_file_atomic(path, *edited, mode);
  if (!written) {
    unmount_all(workdir.mount);
    ::rmdir(workdir.mount.c_str());
  }
  return written;
}

std::string workdir_mount_path(const std::string& state_dir, const std::string& runc_root,
                               const std::string& id) {
  return state_dir + "/mounts/" + runc_root_hash(runc_root) + "/" + id + "/work";
}

Result<void> release_workdir_mount(const std::string& state_dir, const std::string& runc_root,
                                   const std::string& id) {
  if (!validate_name("container id", id)) return fail("invalid container id");
  std::string work = workdir_mount_path(state_dir, runc_root, id);
  unmount_all(work);
  if (::rmdir(work.c_str()) != 0 && errno != ENOENT) return fail_errno("rmdir " + work);
  std::string id_dir = dirname_of(work);
  if (::rmdir(id_dir.c_str()) != 0 && errno != ENOENT) return fail_errno("rmdir " + id_dir);
  ::rmdir(dirname_of(id_dir).c_str());  // Only when empty.
  return {};
}

}  // namespace arch
