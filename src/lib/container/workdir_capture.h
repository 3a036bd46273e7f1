// Shared mode's work directory rolled back with its generation: captured (a snapshot tar,
// size-capped by the node) with each checkpoint while the container is frozen, and put
// back by a restore from that generation when the directory has changed since, so a job
// restored from an older generation (its node died after a periodic checkpoint) does not
// find, and repeat, what it wrote after it.
//
// Both ends work on the root-only bind of the work directory in ARCH's state dir
// (shared_mode.h), never on the tenant-writable shared path: nothing is followed, no mount
// is crossed, and the put-back is the rootfs diff's applier (openat2 RESOLVE_IN_ROOT) fed a
// snapshot whose first entry empties the directory.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "base/error.h"
#include "base/expansion_limit.h"

namespace arch {

/// The most entries a captured work directory may hold (more: not captured).
inline constexpr uint64_t kWorkdirMaxEntries = 100000;

/// The file the capture is kept in, inside the checkpoint.
inline constexpr const char* kWorkdirFile = "workdir.tar";

/// What a walk of a work directory found.
struct WorkdirSummary {
  uint64_t bytes = 0;    ///< Sizes of its regular files (st_size).
  uint64_t entries = 0;  ///< Everything below the root.
  /// SHA-256 (hex) over every entry's path, type, mode, owner, size, mtime and link target,
  /// in sorted order (directories: path, mode and owner only, their times change with
  /// their children). Equal fingerprints: nothing a job can tell apart has changed.
  std::string fingerprint;
  /// Non-empty when the walk stopped: the reason the directory is not captured (over the
  /// byte or entry cap, or another mount inside it).
  std::string refused;
};

/// Walks the directory `dirfd` without following links or crossing into another mount.
Result<WorkdirSummary> summarize_workdir(int dirfd, uint64_t max_bytes, uint64_t max_entries);

/// Captures the directory at `dir` into `out_path` (created 0600) when its files total at
/// most `max_bytes` and it holds at most kWorkdirMaxEntries entries. Returns the record for
/// the manifest's extra.workdir: {"captured": true, "file", "bytes", "entries",
/// "fingerprint"}, or {"captured": false, "reason"} with no file written.
Result<nlohmann::json> capture_workdir(const std::string& dir, uint64_t max_bytes,
                                       const std::string& out_path);

/// The restore's half: when `recorded` (a manifest's extra.workdir) holds a capture and
/// the directory at `dir` no longer matches its fingerprint, applies the capture read from
/// `tar_fd` (within the recorded counts and `caps`), so the directory is as it was at the
/// checkpoint. Returns a note for the restore's outcome ("" when nothing was needed).
Result<std::string> put_back_workdir(const std::string& dir, const nlohmann::json& recorded,
                                     int tar_fd, const ExpansionLimits& caps);

}  // namespace arch
