// ExitStatus: how each container's main process ended, recorded by archd from containerd's
// task-exit events and read by arch-runc's `delete` (exit 0: finished; else keep).
//
// Layout: <exits dir>/<namespace>/<container id>, one small JSON file per container,
// replaced atomically (readers see the old or the new record, never a torn one):
//   {"exit_status":3,"pid":4242,"exited_at":"2026-01-02T03:04:05.123456789Z","exec_id":"c1"}
// Only the init process's exit (event id == container id) is the container's; exits of
// exec'd processes are not recorded. Namespace and id are checked with validate_name, so
// no path escapes the directory. The directories are root-only (0700), the files 0600.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "base/error.h"

namespace arch {

/// One containerd task-exit event (topic "/tasks/exit").
struct TaskExitEvent {
  std::string ns;            ///< containerd namespace ("default", "moby", "k8s.io" ...).
  std::string container_id;  ///< The container (task) whose process exited.
  std::string exec_id;       ///< The process: == container_id for the init process.
  uint32_t pid = 0;
  uint32_t exit_status = 0;  ///< 128 + signal when killed (137 for SIGKILL).
  std::string exited_at;     ///< RFC 3339 UTC with nanoseconds; empty when not given.
};

/// True when the event is the exit of the container's init (main) process.
inline bool is_init_exit(const TaskExitEvent& e) {
  return e.exec_id.empty() || e.exec_id == e.container_id;
}

/// A recorded exit as read back.
struct ExitRecord {
  int exit_status = 0;
  uint32_t pid = 0;
  std::string exited_at;
  std::string exec_id;
};

/// `seconds` and `nanos` since the epoch as RFC 3339 UTC with nine fractional digits
/// ("2026-01-02T03:04:05.000000001Z").
std::string format_exit_time(int64_t seconds, int32_t nanos);

/// The record's path: <dir>/<ns>/<id>; an error when ns or id is not a valid name.
Result<std::string> exit_status_path(const std::string& dir, const std::string& ns,
                                     const std::string& id);

/// Records `event` under `dir` when it is the init process's exit (returns true); the exit
/// of an exec'd process is ignored (returns false). Creates <dir>/<ns> as needed.
Result<bool> record_exit_status(const std::string& dir, const TaskExitEvent& event);

/// The recorded exit of container `id` in namespace `ns`; nullopt when none is recorded.
/// A malformed record is an error (callers treat it as unknown).
Result<std::optional<ExitRecord>> read_exit_record(const std::string& dir, const std::string& ns,
                                                   const std::string& id);

/// The recorded exit status; nullopt when unknown.
Result<std::optional<int>> read_exit_status(const std::string& dir, const std::string& ns,
                                            const std::string& id);

/// read_exit_status(), retried every 20 ms for up to `wait_ms` while nothing is recorded
/// (archd records an exit a moment after the engine sees it). nullopt: still unknown, or
/// the record is unreadable.
std::optional<int> wait_for_exit_status(const std::string& dir, const std::string& ns,
                                        const std::string& id, int wait_ms);

/// Removes the record (missing is fine): a container created again under the same id
/// must not inherit its predecessor's status.
Result<void> forget_exit_status(const std::string& dir, const std::string& ns,
                                const std::string& id);

}  // namespace arch
