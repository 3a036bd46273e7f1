// Restore: verified checkpoint → rootfs diff → runc restore, with the failure policy's
// bookkeeping (move aside with reason, rootfs put back).
#include "restore.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>

#include "checkpoint_store.h"
#include "file_util.h"
#include "lazy_pages.h"
#include "rootfs_diff.h"
#include "runc_client.h"
#include "store_layout.h"

namespace arch {
std::vector<std::string> restore_flags_from_create(const RuncCommandLine& create,
                                                   const std::string& bundle) {
  std::vector<std::string> flags = {"--bundle", bundle};
  if (auto pid = create.flag("pid-file"))
    flags.insert(flags.end(), {"--pid-file", std::string(*pid)});
  if (auto sock = create.flag("console-socket")) {
    flags.insert(flags.end(), {"--console-socket", std::string(*sock)});
  }
  if (create.flag_set("no-pivot")) flags.push_back("--no-pivot");
  return flags;
}

Result<RestoreOutcome> restore_container(const RuncCommandLine& create, const ContainerRecord& rec,
                                         const NodeConfig& config, const std::string& runc_path,
                                         bool* rootfs_clean) {
  if (rootfs_clean != nullptr) *rootfs_clean = true;
  auto start = std::chrono::steady_clock::now();
  CheckpointStore store(rec.store, config.keep);
  auto lock = store.lock(rec.ns, rec.key, std::chrono::seconds(60));
  if (!lock) return std::unexpected(lock.error().wrap("lock " + rec.ns + "/" + rec.key));
  (void)store.cleanup_stale(*lock);
  auto ckpt = store.latest_verified(rec.ns, rec.key, *lock);
  if (!ckpt) {
    // ENOENT here means "none left that verifies"; the reasons are in the text.
    return fail("no usable checkpoint: " +
                (ckpt.error().code() == ENOENT ? ckpt.error().text() : ckpt.error().message()));
  }

  auto root_path = read_root_path(rec.bundle);
  std::string rootfs = root_path ? *root_path : rec.bundle + "/rootfs";
  auto upper = overlay_upperdir(rootfs);
  // Any failure from here: move the checkpoint aside and put the rootfs back.
  bool touched_rootfs = false;
  auto give_up = [&](const Error& e) -> std::unexpected<Error> {
    (void)store.move_aside(ckpt->path, e.message(), *lock);
    Error out = e.wrap("restore from " + ckpt->path + " (moved aside)");
    if (touched_rootfs) {
      if (auto reset = reset_overlay(rootfs); !reset) {
        if (rootfs_clean != nullptr) *rootfs_clean = false;
        return std::unexpected(
            out.wrap("and the new rootfs could not be put back (" + reset.error().message() + ")"));
      }
    }
    return std::unexpected(out);
  };
  if (!upper) return give_up(upper.error().wrap("find the new container's writable layer"));

  auto tar = open_file(ckpt->path + "/rootfs-diff.tar", O_RDONLY);
  if (!tar) return give_up(tar.error());
  touched_rootfs = true;
  if (auto applied = apply_rootfs_diff(tar->get(), rootfs); !applied) {
    return give_up(applied.error().wrap("apply rootfs diff"));
  }

  std::string work = rec.bundle + "/arch-restore";
  if (::mkdir(work.c_str(), 0700) != 0 && errno != EEXIST)
    return give_up(errno_error("mkdir " + work));
  RuncClient runc(runc_path, rec.runc_root, config.criu);
  auto restored =
      restore_maybe_lazily(runc, config.criu, rec.id, ckpt->path + "/images", work,
                           restore_flags_from_create(create, rec.bundle), std::string(create.log),
                           lazy_restore_wanted(config, rec.bundle));
  if (!restored) {
    // runc may have left a half-made container behind; the fresh create needs the id.
    std::vector<std::string> del = {runc_path, "--root",  rec.runc_root,
                                    "delete",  "--force", rec.id};
    (void)run_process(del);
    return give_up(restored.error());
  }
  if (auto marked = ContainerRegistry(config.state_dir).mark_restored(rec.runc_root, rec.id);
      !marked) {
    return std::unexpected(marked.error().wrap("restored, but recording it failed"));
  }
  RestoreOutcome out;
  out.checkpoint = ckpt->path;
  out.lazy = restored->lazy;
  out.lazy_failure = restored->lazy_failure;
  for (const auto& f : ckpt->manifest.files) out.bytes += f.size;
  out.ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  return out;
}

}  // namespace arch
