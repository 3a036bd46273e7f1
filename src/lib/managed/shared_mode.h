// SharedMode: preparing an ARCH-enabled container for shared mode before runc creates (or
// restores) it: the job's work directory on the shared filesystem, bind-mounted into the
// container and made its working directory.
//
//   <shared>/work/<owner>/<key>  --bind (of the opened fd)-->  <state>/mounts/<h>/<id>/work
//                                --rbind (runc)-->  ARCH_WORKDIR_CONTAINER_PATH
//
// The shared path itself must already exist (it is the user's mounted filesystem: ARCH
// never creates it, so an unmounted share is an error rather than a silent local
// directory). Every directory from the allowed root down to work/<owner> is opened from the
// root's fd without following symlinks (base/beneath.h), must be owned by root and not
// writable by group or others, and is created (0711) when missing. The work directory is
// created owned by the container's user (mapped through the spec's uid/gid mappings) and
// is never chowned again: it holds the job's output. runc never sees the shared path: the
// opened directory is bind-mounted (through /proc/self/fd) onto a root-only directory in
// ARCH's state dir, and that is the spec's mount source, so nothing a tenant does to the
// shared filesystem between this check and runc's mount changes what is mounted. The bind
// goes at delete (release_workdir_mount). The mount point
// is created inside the rootfs with openat2(RESOLVE_IN_ROOT), so an image symlink at that
// path cannot point it at the host. The spec gets the mount and process.cwd and is
// replaced atomically. The same edit on every create makes a restore see the mount tree
// the checkpoint was taken with.
#pragma once

#include <string>

#include "base/error.h"
#include "managed/store_layout.h"

namespace arch {

/// Creates the work directory and the mount point, binds the work directory onto
/// `workdir.mount` and edits `<bundle>/config.json`. Refuses a spec that already mounts
/// something at the work directory's container path. On failure nothing stays mounted.
Result<void> apply_shared_workdir(const std::string& bundle, const std::string& rootfs,
                                  const SharedWorkdir& workdir);

/// Where the work directory of container `id` (under `runc_root`) is bound for runc:
/// <state dir>/mounts/<runc_root_hash>/<id>/work.
std::string workdir_mount_path(const std::string& state_dir, const std::string& runc_root,
                               const std::string& id);

/// Unmounts and removes workdir_mount_path() (nothing there is fine).
Result<void> release_workdir_mount(const std::string& state_dir, const std::string& runc_root,
                                   const std::string& id);

/// The spec edit alone, on config.json text (for tests): returns the new text.
Result<std::string> add_workdir_to_spec(std::string_view config_json, const SharedWorkdir& workdir);

}  // namespace arch
