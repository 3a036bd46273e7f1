// JobRecord: what archd knows of one process job (launched by it, or adopted with
// `archctl process checkpoint`), and the jobs file that keeps them across archd restarts
// (versioned JSON in archd's state directory, written atomically).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"

namespace arch {

inline constexpr int kJobsFormatVersion = 1;
/// The store namespace of job checkpoints.
inline constexpr const char* kJobsNamespace = "jobs";
/// The file in a job checkpoint that describes the job (covered by the manifest).
inline constexpr const char* kJobFileName = "job.json";

/// A job's life: running (archd's child), detached (running, but archd restarted and is no
/// longer its parent: no exit status), exited, checkpointed (dumped and stopped), lost (gone
/// while archd could not see it: status unknown).
namespace job_state {
inline constexpr const char* kRunning = "running";
inline constexpr const char* kDetached = "detached";
inline constexpr const char* kExited = "exited";
inline constexpr const char* kCheckpointed = "checkpointed";
inline constexpr const char* kLost = "lost";
}  // namespace job_state

/// The latest checkpoint of a job.
struct JobCheckpointRef {
  std::string path;     ///< Committed checkpoint directory in the store.
  std::string created;  ///< RFC 3339 UTC.
  std::string archive;  ///< Exported archive, when one was written.
  bool operator==(const JobCheckpointRef&) const = default;
};

struct JobRecord {
  std::string id;                 ///< 12 hex digits.
  std::string name;               ///< For people and archive names.
  std::string kind = "job";       ///< "job" (archd started it) or "process" (adopted).
  std::vector<std::string> argv;  ///< As launched (or /proc/PID/cmdline when adopted).
  std::vector<std::string> env;   ///< "K=V" (empty for adopted processes).
  std::string cwd;
  std::string log;  ///< The per-job log (stdout and stderr).
  /// The log file as the job's fds name it in its images ("var/lib/.../output.log",
  /// CRIU's key for inheriting it): set at launch, kept across restores and nodes.
  std::string log_key;
  pid_t pid = 0;
  uint64_t start_time = 0;  ///< /proc/PID/stat starttime: the pid is this process.
  std::string state = job_state::kRunning;
  int exit_code = -1;  ///< Exit status, or 128 + signal; -1: unknown / not exited.
  int exit_signal = 0;
  long created = 0, started = 0, finished = 0;  ///< Seconds since the epoch.
  int restores = 0;
  JobCheckpointRef checkpoint;
  bool operator==(const JobRecord&) const = default;

  /// Running, whether or not archd is its parent.
  [[nodiscard]] bool alive() const {
    return state == job_state::kRunning || state == job_state::kDetached;
  }
};

void to_json(nlohmann::json& j, const JobRecord& r);
void from_json(const nlohmann::json& j, JobRecord& r);

/// Parses the jobs file; refuses a newer format.
Result<std::vector<JobRecord>> parse_jobs(std::string_view text);
std::string serialize_jobs(const std::vector<JobRecord>& jobs);
/// A missing file gives no jobs.
Result<std::vector<JobRecord>> load_jobs(const std::string& path);
Result<void> save_jobs(const std::string& path, const std::vector<JobRecord>& jobs);

/// A new random job id (12 hex digits).
std::string new_job_id();
/// A job name: [A-Za-z0-9_.-], 1-64, not starting with '.' or '-'.
Result<void> validate_job_name(std::string_view name);
/// A name derived from argv[0]'s base name (invalid characters become '-').
std::string default_job_name(const std::vector<std::string>& argv);

/// "<name>_<UTC YYYYmmddTHHMMSSZ>.tar.zst" (".tar" without compression).
std::string archive_file_name(std::string_view name, long when, bool compressed);

}  // namespace arch
