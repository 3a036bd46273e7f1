// SharedMode: preparing an ARCH-enabled container for shared mode before runc creates (or
// restores) it: the job's work directory on the shared filesystem, bind-mounted into the
// container and made its working directory.
//
//   <ARCH_SHAREDFS_HOST_PATH>/work/<ns>/<key>  --rbind-->  ARCH_WORKDIR_CONTAINER_PATH
//
// The shared path itself must already exist (it is the user's mounted filesystem: ARCH
// never creates it, so an unmounted share is an error rather than a silent local
// directory). Below it, directories are created one `*at` call at a time with O_NOFOLLOW.
// The work directory is created owned by the container's user (mapped through the spec's
// uid/gid mappings) and is never chowned again: it holds the job's output. The mount point
// is created inside the rootfs with openat2(RESOLVE_IN_ROOT), so an image symlink at that
// path cannot point it at the host. The spec gets the mount and process.cwd and is
// replaced atomically. The same edit on every create makes a restore see the mount tree
// the checkpoint was taken with.
#pragma once

#include <string>

#include "base/error.h"
#include "managed/store_layout.h"

namespace arch {

/// Creates the work directory and the mount point and edits `<bundle>/config.json`.
/// Refuses a spec that already mounts something at the work directory's container path.
Result<void> apply_shared_workdir(const std::string& bundle, const std::string& rootfs,
                                  const SharedWorkdir& workdir);

/// The spec edit alone, on config.json text (for tests): returns the new text.
Result<std::string> add_workdir_to_spec(std::string_view config_json, const SharedWorkdir& workdir);

}  // namespace arch
