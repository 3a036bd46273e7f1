// CriuRpc: CRIU driven through its RPC protocol (`criu swrk <fd>`): one criu process per
// request, started as our child with one end of a SOCK_SEQPACKET socketpair as fd 3; each
// message is one packet holding one serialized request or response (proto/criu_rpc.proto,
// field numbers from CRIU's rpc.proto). Requests and errors are structured (success,
// cr_errno, cr_errmsg) instead of parsed from CRIU's output; on failure the error also
// carries the "Error (...)" lines of CRIU's log, which say why.
//
// File descriptors: images_dir_fd and work_dir_fd are fds of *this* process (CRIU opens
// them through /proc/<our pid>/fd, our pid being its socket peer); inherited fds for a
// restore are handed to the criu child at fixed numbers (swrk only), so CRIU can give them
// to the restored tasks in place of the files or pipes named by their keys.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "base/error.h"

namespace arch {

/// What `criu swrk` reports of itself (VERSION request).
struct CriuVersion {
  int major = 0, minor = 0, sublevel = 0;
  std::string gitid;
  /// "4.1.1" (sublevel included when set).
  [[nodiscard]] std::string text() const;
};

/// Options CRIU's dump and restore share.
struct CriuCommonOptions {
  int images_dir_fd = -1;             ///< Our fd on the images directory (required).
  int work_dir_fd = -1;               ///< Our fd on the directory for the log (-1: images dir).
  std::string log_file;               ///< Log name inside the work dir.
  int log_level = 4;                  ///< 0-4; 4 keeps enough to explain a failure.
  bool shell_job = false;             ///< The tree's session/pgid leader is outside it.
  bool tcp_established = false;       ///< Dump/restore established TCP connections.
  bool ext_unix_sk = false;           ///< Allow unix sockets connected to the outside.
  bool file_locks = false;            ///< Dump/restore file locks.
  std::vector<std::string> external;  ///< --external entries.
};

struct CriuDumpOptions : CriuCommonOptions {
  pid_t pid = 0;               ///< Root of the tree to dump.
  bool leave_running = false;  ///< Else CRIU kills the tree once dumped.
  /// Largest deleted-but-open file stored in the images (bytes; 0: CRIU's own 1 MiB). The
  /// RPC field is 32-bit: larger values are capped at 4 GiB - 1.
  std::uint64_t ghost_limit = 0;
};

struct CriuRestoreOptions : CriuCommonOptions {
  /// The restored root becomes the caller's child (CRIU forks it with CLONE_PARENT), so
  /// the caller reaps it and sees its exit status.
  bool rst_sibling = true;
  /// (key, our fd): files or pipes CRIU takes from us instead of re-opening them.
  std::vector<std::pair<std::string, int>> inherit_fds;
};

/// One CRIU binary, spoken to through `criu swrk`.
class CriuRpc {
 public:
  explicit CriuRpc(std::string criu_path) : criu_(std::move(criu_path)) {}
  [[nodiscard]] const std::string& path() const { return criu_; }

  /// VERSION request.
  Result<CriuVersion> version() const;
  /// DUMP request: the tree rooted at options.pid into the images dir.
  Result<void> dump(const CriuDumpOptions& options) const;
  /// RESTORE request: returns the restored root's pid.
  Result<pid_t> restore(const CriuRestoreOptions& options) const;

 private:
  std::string criu_;
};

/// The "Error (...)" lines (at most `max_lines`, the last ones) of a CRIU log, without the
/// harmless RLIMIT_NOFILE complaint; empty when there are none or the log is unreadable.
std::string criu_log_errors(int dirfd, const std::string& log_file, std::size_t max_lines = 6);

}  // namespace arch
