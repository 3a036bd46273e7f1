// JobLaunch: starting a process job (own session, stdin /dev/null, stdout and stderr
// appended to its log, no tty: what CRIU can dump without shell-job tricks) and reading
// what /proc says about a process tree (identity, session, terminal, sockets), also to
// adopt a process that was started otherwise.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "base/error.h"
#include "jobs/job_record.h"

namespace arch {

struct JobLaunchSpec {
  std::vector<std::string> argv;  ///< argv[0] is searched in the job's PATH when it has no '/'.
  std::vector<std::string> env;   ///< "K=V", the job's whole environment.
  std::string cwd;                ///< Absolute.
  std::string log_path;           ///< Created 0600 if missing; appended to.
};

/// Starts the job as our child, in a new session, and returns its pid. Fails (nothing
/// started) when the program cannot be found, the cwd or log cannot be opened.
Result<pid_t> launch_job(const JobLaunchSpec& spec);

/// argv0 resolved against `path_var` (a PATH value) relative to `cwd`; names with '/'
/// are taken as they are (relative to cwd).
Result<std::string> resolve_program(const std::string& argv0, const std::string& path_var,
                                    const std::string& cwd);

/// What /proc/PID/stat says.
struct ProcStat {
  char state = '?';
  pid_t ppid = 0, pgid = 0, sid = 0;
  int tty_nr = 0;
  uint64_t start_time = 0;
};
Result<ProcStat> read_proc_stat(pid_t pid);

/// Calls `fn(pid, stat)` for every process in /proc whose stat could be read.
void for_each_process(const std::function<void(pid_t, const ProcStat&)>& fn);

/// The pid and its descendants (through /proc/PID/task/TID/children), parents first.
std::vector<pid_t> process_tree(pid_t root);

/// What in the tree CRIU cannot dump as it is, in words for the user: a controlling
/// terminal, terminal fds, sockets (TCP, unix sockets to the outside). Empty: nothing seen.
std::vector<std::string> dump_warnings(pid_t root);

/// /proc/PID/cmdline as argv.
std::vector<std::string> process_argv(pid_t pid);

/// A record for a process we did not start (`archctl process checkpoint`): kind "process",
/// a new id, argv, name and cwd from /proc, running when it is our child (else detached),
/// created and started at `now`. ENOENT when there is no such process.
Result<JobRecord> adopted_process_record(pid_t pid, long now);

}  // namespace arch
