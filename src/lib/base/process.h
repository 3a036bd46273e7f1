// Process: every child process ARCH starts, with an explicit plan for its file
// descriptors, reaped on every path.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/unique_fd.h"

namespace arch {

/// What the child gets: stdin from /dev/null unless `stdin_fd` is given; stdout and
/// stderr captured (or sent to /dev/null, or to given fds). Nothing else is inherited
/// (every other fd is O_CLOEXEC by convention).
struct ProcessOptions {
  int stdin_fd = -1;                                 ///< -1: /dev/null.
  int stdout_fd = -1;                                ///< -1: captured into ProcessResult::out.
  int stderr_fd = -1;                                ///< -1: captured into ProcessResult::err.
  std::optional<std::chrono::milliseconds> timeout;  ///< Killed (SIGKILL) when exceeded.
  std::string cwd;                                   ///< Empty: inherit.
  /// One more fd for the child: `inherit_fd` (ours) becomes `inherit_as` (>= 3) in it,
  /// e.g. a network namespace runc hands on to CRIU (`inherit-fd`). -1: none.
  int inherit_fd = -1;
  int inherit_as = -1;
};

struct ProcessResult {
  int exit_code = -1;  ///< Exit status, or 128 + signal when killed by one.
  bool timed_out = false;
  std::string out;
  std::string err;
  [[nodiscard]] bool ok() const { return exit_code == 0 && !timed_out; }
};

/// Runs argv[0] (an absolute path) with `argv`, waits for it and returns how it ended.
/// The child is killed if the calling thread's process dies first (PR_SET_PDEATHSIG).
/// Fails only when the process could not be started.
Result<ProcessResult> run_process(const std::vector<std::string>& argv,
                                  const ProcessOptions& options = {});

/// Starts argv[0] (absolute) in a new session with stdin from `stdin_fd` and stdout/stderr
/// on /dev/null, and returns its pid without waiting. The caller reaps it.
Result<pid_t> spawn_detached(const std::vector<std::string>& argv, int stdin_fd);

/// Forks a watcher that outlives the caller: it waits until the process `pid` (normally
/// the caller itself, about to exec another program under the same pid) has exited, runs
/// `then`, and exits. The watcher is detached at once (double fork, new session; the
/// caller waits only for the intermediate child), has stdio on /dev/null and no other fd of
/// the caller, so it holds no pipe or lock the caller's caller waits on.
Result<void> watch_exit(pid_t pid, const std::function<void()>& then);

/// A pidfd for `pid` (pidfd_open): it keeps naming that process after the number is reused.
Result<UniqueFd> open_pidfd(pid_t pid);

/// Sends `sig` to the process a pidfd names (pidfd_send_signal). A process that has
/// already exited is not an error.
Result<void> signal_pidfd(int pidfd, int sig);

/// "argv[0] arg1 ...", for messages.
std::string join_argv(const std::vector<std::string>& argv);

}  // namespace arch
