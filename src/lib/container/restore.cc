// Restore: verified checkpoint → rootfs diff → runc restore, with the failure policy's
// bookkeeping (move aside with reason, rootfs put back).
#include "container/restore.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>

#include "base/file_util.h"
#include "container/rootfs_diff.h"
#include "criu/lazy_pages.h"
#include "managed/store_layout.h"
#include "runtime/runc_client.h"
#include "store/checkpoint_store.h"

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

namespace {

// One attempt: this checkpoint's rootfs diff into the new rootfs, then runc restore.
// `touched_rootfs` says whether the rootfs may have changed (so it must be put back).
Result<RestoreMode> restore_from(const CommittedCheckpoint& ckpt, const RuncCommandLine& create,
                                 const ContainerRecord& rec, const NodeConfig& config,
                                 const std::string& runc_path, const std::string& rootfs,
                                 bool* touched_rootfs) {
  auto tar = open_file(ckpt.path + "/rootfs-diff.tar", O_RDONLY);
  if (!tar) return std::unexpected(tar.error());
  *touched_rootfs = true;
  if (auto applied = apply_rootfs_diff(tar->get(), rootfs); !applied) {
    return std::unexpected(applied.error().wrap("apply rootfs diff"));
  }
  std::string work = rec.bundle + "/arch-restore";
  if (::mkdir(work.c_str(), 0700) != 0 && errno != EEXIST) return fail_errno("mkdir " + work);
  RuncClient runc(runc_path, rec.runc_root, config.criu);
  auto restored =
      restore_maybe_lazily(runc, config.criu, rec.id, ckpt.path + "/images", work,
                           restore_flags_from_create(create, rec.bundle), std::string(create.log),
                           lazy_restore_wanted(config, rec.bundle));
  if (!restored) {
    // runc may have left a half-made container behind; the next attempt (or the fresh
    // create) needs the id.
    std::vector<std::string> del = {runc_path, "--root",  rec.runc_root,
                                    "delete",  "--force", rec.id};
    (void)run_process(del);
    return std::unexpected(restored.error());
  }
  return restored;
}

// At most this many generations are tried for one create (each failure moves one aside).
constexpr int kMaxRestoreAttempts = 8;

}  // namespace

Result<RestoreOutcome> restore_container(const RuncCommandLine& create, const ContainerRecord& rec,
                                         const NodeConfig& config, const std::string& runc_path,
                                         bool* rootfs_clean) {
  if (rootfs_clean != nullptr) *rootfs_clean = true;
  auto start = std::chrono::steady_clock::now();
  CheckpointStore store(rec.store, config.keep, rec.store_root);
  auto lock = store.lock(rec.owner, rec.key, std::chrono::seconds(60));
  if (!lock) return std::unexpected(lock.error().wrap("lock " + rec.owner + "/" + rec.key));
  (void)store.cleanup_stale(*lock);

  auto root_path = read_root_path(rec.bundle);
  std::string rootfs = root_path ? *root_path : rec.bundle + "/rootfs";
  // Newest verified generation first; one that fails to restore is moved aside with the
  // reason, the rootfs is put back, and the generation before it is tried.
  std::vector<std::string> failed;
  for (int attempt = 0; attempt < kMaxRestoreAttempts; ++attempt) {
    auto ckpt = store.latest_verified(rec.owner, rec.key, *lock);
    if (!ckpt) {
      // ENOENT means "none left that verifies"; the reasons are in the text.
      std::string why =
          ckpt.error().code() == ENOENT ? ckpt.error().text() : ckpt.error().message();
      for (const auto& f : failed) why += "; " + f;
      return fail("no usable checkpoint: " + why);
    }
    if (auto upper = overlay_upperdir(rootfs); !upper) {
      Error e = upper.error().wrap("find the new container's writable layer");
      (void)store.move_aside(ckpt->path, e.message(), *lock);
      return std::unexpected(e.wrap("restore from " + ckpt->path + " (moved aside)"));
    }
    bool touched_rootfs = false;
    auto done = restore_from(*ckpt, create, rec, config, runc_path, rootfs, &touched_rootfs);
    if (done) {
      if (auto marked = ContainerRegistry(config.state_dir).mark_restored(rec.runc_root, rec.id);
          !marked) {
        return std::unexpected(marked.error().wrap("restored, but recording it failed"));
      }
      RestoreOutcome out;
      out.checkpoint = ckpt->path;
      out.lazy = done->lazy;
      out.lazy_failure = done->lazy_failure;
      out.skipped = std::move(failed);
      for (const auto& s : ckpt->skipped) out.skipped.push_back(s);
      for (const auto& f : ckpt->manifest.files) out.bytes += f.size;
      out.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                   .count();
      return out;
    }
    (void)store.move_aside(ckpt->path, done.error().message(), *lock);
    Error out = done.error().wrap("restore from " + ckpt->path + " (moved aside)");
    if (touched_rootfs) {
      if (auto reset = reset_overlay(rootfs); !reset) {
        if (rootfs_clean != nullptr) *rootfs_clean = false;
        return std::unexpected(
            out.wrap("and the new rootfs could not be put back (" + reset.error().message() + ")"));
      }
    }
    failed.push_back(out.message());
  }
  std::string why = "gave up after " + std::to_string(kMaxRestoreAttempts) + " generations";
  for (const auto& f : failed) why += "; " + f;
  return fail(why);
}

}  // namespace arch
