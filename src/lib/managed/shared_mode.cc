// SharedMode: work directory on the shared filesystem, mount point in the rootfs, spec edit.
#include "managed/shared_mode.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/file_util.h"

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

// mkdirat + open of `name` under `parent`, never following a symlink. `created` says
// whether this call made it.
Result<UniqueFd> open_or_make_dir(int parent, const std::string& name, mode_t mode, bool* created,
                                  const std::string& shown) {
  *created = ::mkdirat(parent, name.c_str(), mode) == 0;
  if (!*created && errno != EEXIST) return fail_errno("mkdir " + shown);
  int fd = retry_eintr([&] {
    return ::openat(parent, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  });
  if (fd < 0) return fail_errno("open " + shown + " (a directory, not a symlink)");
  return UniqueFd(fd);
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

// Creates <shared_root>/work/<ns>/<key> (root-only parents, the last owned by uid:gid).
Result<void> make_host_workdir(const std::string& shared_root, const std::string& host_dir,
                               unsigned uid, unsigned gid) {
  int fd =
      retry_eintr([&] { return ::open(shared_root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); });
  if (fd < 0) {
    return fail_errno("ARCH_SHAREDFS_HOST_PATH " + shared_root +
                      " is not an accessible directory (is the shared filesystem mounted?)");
  }
  UniqueFd dir(fd);
  std::string rel = host_dir.substr(shared_root == "/" ? 0 : shared_root.size());
  auto parts = components(rel);
  std::string shown = shared_root;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    bool last = i + 1 == parts.size();
    shown += "/" + parts[i];
    bool created = false;
    auto next = open_or_make_dir(dir.get(), parts[i], last ? 0750 : 0711, &created, shown);
    if (!next) return std::unexpected(next.error());
    if (last && created && ::fchown(next->get(), uid, gid) != 0) {
      return fail_errno("chown " + shown + " to " + std::to_string(uid) + ":" +
                        std::to_string(gid));
    }
    dir = std::move(*next);
  }
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
    if (m.value("source", "") == workdir.host) return spec.dump(2);  // Already ours.
    return fail("the spec already mounts " + m.value("source", std::string("something")) +
                " at ARCH_WORKDIR_CONTAINER_PATH " + workdir.container);
  }
  mounts.push_back({{"destination", workdir.container},
                    {"type", "bind"},
                    {"source", workdir.host},
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
  if (auto ok = make_host_workdir(workdir.shared, workdir.host, *host_uid, *host_gid); !ok)
    return ok;
  auto edited = add_workdir_to_spec(*text, workdir);
  if (!edited) return std::unexpected(edited.error().wrap(path));
  if (auto ok = make_mount_point(rootfs, workdir.container); !ok) return ok;
  struct stat st {};
  mode_t mode = ::stat(path.c_str(), &st) == 0 ? (st.st_mode & 07777) : 0644;
  return write_file_atomic(path, *edited, mode);
}

}  // namespace arch
