// FileLocks: the file locks a set of processes holds, read from the kernel, recorded in a
// checkpoint's manifest at dump time and checked again after the restore (CRIU restores
// locks only in its file-locks mode, and a restore that silently drops one is a lie).
//
// Source: /proc/<pid>/fdinfo/<fd> lists, in /proc/locks's own format ("lock:\t1: FLOCK
// ADVISORY WRITE <pid> <maj:min:ino> <start> <end>"), the locks that this open file
// (flock, OFD) or this process (POSIX) owns on the fd's file, so each /proc/locks entry of
// the container's tasks is tied to the file it locks (/proc/<pid>/fd/<fd>, as the process
// sees its path). Inode numbers change across a restore (a new overlay); paths do not.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"

namespace arch {

/// One held lock, in the terms that survive a restore.
struct HeldLock {
  std::string kind;   ///< FLOCK, POSIX or OFDLCK.
  std::string mode;   ///< READ or WRITE.
  std::string path;   ///< The locked file as the holder sees it ("/data/lock").
  std::string start;  ///< First byte (decimal), "0" for flock.
  std::string end;    ///< Last byte (decimal) or "EOF".

  bool operator==(const HeldLock&) const = default;
  auto operator<=>(const HeldLock&) const = default;
};

/// One parsed "lock:" line of an fdinfo file.
struct LockLine {
  std::string kind, mode, dev_ino, start, end;
};

/// Parses the "lock:" lines of one /proc/<pid>/fdinfo/<fd> text.
std::vector<LockLine> parse_fdinfo_locks(std::string_view fdinfo);

/// The locks the processes `pids` hold (each lock once per process that owns it), sorted.
/// Processes that exit meanwhile are skipped.
std::vector<HeldLock> locks_held_by(const std::vector<int>& pids);

/// JSON for the manifest's extra.file_locks, and back (entries that are not well-formed
/// objects are an error: a sealed manifest is the node's own writing).
nlohmann::json locks_to_json(const std::vector<HeldLock>& locks);
Result<std::vector<HeldLock>> locks_from_json(const nlohmann::json& j);

/// The recorded locks that `now` does not hold (multiset difference), empty when every
/// recorded lock is held again.
std::vector<HeldLock> missing_locks(const std::vector<HeldLock>& recorded,
                                    const std::vector<HeldLock>& now);

/// "FLOCK WRITE /data/lock" (with the range for byte-range locks).
std::string describe(const HeldLock& lock);

}  // namespace arch
