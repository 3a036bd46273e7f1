// ActivityLog: the node's record of every container checkpoint and restore made outside
// archd (archctl, arch-runc on stop and on create), so that archd counts them too.
//
// One JSON line per result, appended to `<[state] dir>/activity.jsonl` (0600, in the
// root-only state directory; never the store, which tenants can write):
//   {"v":1,"time":1764000000.123,"what":"checkpoint","source":"archctl","outcome":"ok",
//    "namespace":"default","id":"job-1","key":"job-1","ms":812.4,"bytes":123,"detail":"..."}
// Writers hold flock(LOCK_EX) on the file for their one write (FileLock, which reopens a
// file unlinked while it waited), so a line is never torn. archd tails it with a cursor
// (device, inode, offset and the file's first bytes) kept in its state file, reads a bounded
// chunk per pass, and once it has read everything it removes a large file under the same
// lock (the next writer creates a new one). Writers give up (an error, the caller logs it)
// when the file has grown past kActivityMaxFileBytes, i.e. when archd has not run for long.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "managed/container_registry.h"

namespace arch {

/// A writer does not append to a file larger than this (archd is not consuming it).
inline constexpr uint64_t kActivityMaxFileBytes = 16 << 20;
/// A line longer than this is not a record (skipped by the reader, cut by the writer).
inline constexpr std::size_t kActivityMaxLineBytes = 4096;

/// One checkpoint or restore result.
struct ActivityRecord {
  double time = 0;        ///< Seconds since the epoch; set by append_activity() when 0.
  std::string what{};     ///< "checkpoint" or "restore".
  std::string source{};   ///< "archctl", "finalize", "on_stop", "create".
  std::string outcome{};  ///< "ok" or "failed".
  std::string ns{};       ///< The container's namespace,
  std::string id{};       ///< its id,
  std::string key{};      ///< and its store key.
  double ms = 0;          ///< How long it took.
  uint64_t bytes = 0;     ///< Bytes committed (checkpoint) or read (restore).
  std::string detail{};   ///< The checkpoint's path, or why it failed (cut to 1 KiB).
  bool operator==(const ActivityRecord&) const = default;
};

/// `<state_dir>/activity.jsonl`.
std::string activity_log_path(const std::string& state_dir);

/// The record as one JSON line (with '\n'), at most kActivityMaxLineBytes.
std::string activity_line(const ActivityRecord& record);
/// Parses one line; refuses anything that is not a well-formed record (unknown `what`,
/// `outcome` not ok/failed, wrong types, over-long).
Result<ActivityRecord> parse_activity_line(std::string_view line);

/// Appends the record under the file's lock (waiting at most 2 s). The state directory
/// must exist (arch-runc and archctl act on registered containers, so it does).
Result<void> append_activity(const std::string& state_dir, ActivityRecord record);

/// Appends (best effort) a checkpoint of `rec` made by `source` ("archctl", "finalize",
/// "migrate", ...): ok or failed, its duration, bytes and detail.
void record_checkpoint_activity(const std::string& state_dir, std::string source,
                                const ContainerRecord& rec, bool ok, double ms, uint64_t bytes,
                                std::string detail);

/// Where a reader is in the activity file.
struct ActivityCursor {
  bool started = false;       ///< False: never read (the first pass starts at the end).
  uint64_t dev = 0, ino = 0;  ///< The file read (0: none was there).
  uint64_t offset = 0;        ///< Bytes consumed.
  std::string head{};         ///< Its first bytes (up to 64): tells a reused inode apart.
  bool operator==(const ActivityCursor&) const = default;
};

/// What one read_activity() pass found.
struct ActivityBatch {
  std::vector<ActivityRecord> records{};
  std::size_t invalid = 0;  ///< Lines that were not records (skipped).
  ActivityCursor cursor{};  ///< Where the next pass starts.
  bool more = false;        ///< Unread bytes remain (the pass stopped at max_bytes).
};

/// Reads the complete lines after `cursor`, at most `max_bytes`. A cursor that never read
/// (!started) starts at the file's current end. A different file (another inode or first
/// bytes), or one shorter than the offset, is read from its start. When everything has
/// been read and the file holds at least `rotate_bytes`, it is removed under its lock (the
/// cursor stays on the removed file, so the next file is read from its start). A file that
/// is not a regular file owned by us with mode 0600 or stricter is refused (error).
/// A missing file is an empty batch.
Result<ActivityBatch> read_activity(const std::string& state_dir, const ActivityCursor& cursor,
                                    std::size_t max_bytes = 256 << 10,
                                    uint64_t rotate_bytes = 1 << 20);

}  // namespace arch
