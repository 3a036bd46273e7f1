// Beneath: opening and creating directories below a trusted root's fd without ever
// following a symlink or leaving the root, and refusing directories another user could
// change (the paths root writes to and deletes from on a multi-tenant node).
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>

#include "base/error.h"
#include "base/unique_fd.h"

namespace arch {

/// Checks that the directory open on `fd` is owned by us (root, in production) and not
/// writable by group or others. `shown` names it in the error (code EPERM).
Result<void> check_trusted_dir(int fd, const std::string& shown);

/// Opens `path` (absolute) as a trusted root: a directory owned by us and not writable by
/// group or others (check_trusted_dir). The path itself comes from the node config.
Result<UniqueFd> open_trusted_root(const std::string& path);

/// openat2(dirfd, name) of one directory with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
/// RESOLVE_NO_MAGICLINKS (so no symlink at any step, no "..", no escape from dirfd). A
/// symlink is refused with ENOTDIR, as openat(O_DIRECTORY | O_NOFOLLOW) refuses it.
Result<UniqueFd> open_dir_beneath(int dirfd, std::string_view name, const std::string& shown);

/// How open_trusted_path() treats the directories it walks.
struct BeneathOptions {
  bool create = false;  ///< mkdirat missing components (with `mode`).
  mode_t mode = 0700;   ///< Mode of directories this call creates.
};

/// Opens the relative path `rel` ("a/b/c"; empty: `root_fd` itself, duplicated) below
/// `root_fd`, one component at a time with open_dir_beneath(); every existing component
/// must pass check_trusted_dir() (ones this call created are ours by construction) and
/// none is ever chmod'ed or chown'ed. `shown` is the root's path, for errors.
Result<UniqueFd> open_trusted_path(int root_fd, std::string_view rel, const std::string& shown,
                                   const BeneathOptions& options = {});

/// The mount id of the open file (statx STATX_MNT_ID), or the device number where the
/// kernel does not report it; two directories with different values are on different
/// mounts.
Result<uint64_t> mount_id_of(int fd);

/// True when `path` (absolute, clean) is `root` or lies below it, comparing whole components.
bool path_is_under(std::string_view path, std::string_view root);

}  // namespace arch
