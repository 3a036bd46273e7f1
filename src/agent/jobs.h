// JobManager: archd's process jobs. It launches jobs as archd's children (archd is a child
// subreaper, so the job's orphaned descendants come back to it too), reaps them and records
// their exit status, and keeps the job table (locking, busy jobs, events) around the
// library's job pipeline: checkpoints with CRIU into the store and as archives
// (jobs/job_checkpoint.h), restores from the store or from an archive made on another node
// (jobs/job_restore.h), with the restored tree again archd's child (CRIU's rst_sibling). It
// also adopts processes archd did not start (`archctl process checkpoint`). Jobs are kept in
// <agent state dir>/jobs/jobs.json and each job's log in <agent state dir>/jobs/<id>/output.log.
// The HTTP routes are in job_routes.h.
//
// archd restarts: a job keeps running (archd's unit uses KillMode=process), but it is no
// longer archd's child and cannot be made one again while it runs: it is shown as
// "detached" (pid watched, exit status unknown, "lost" once it is gone). A checkpoint and
// restore of a detached job makes it archd's child again.
#pragma once

#include <sys/types.h>

#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "agent.h"
#include "base/error.h"
#include "config/node_config.h"
#include "event_log.h"
#include "jobs/job_checkpoint.h"
#include "jobs/job_record.h"
#include "jobs/job_restore.h"

namespace arch::agent {

/// POST /v1/jobs.
struct JobRunRequest {
  std::vector<std::string> argv;
  std::vector<std::string> env;  ///< "K=V"; the caller's environment, or from --env-file.
  std::string cwd;               ///< Absolute.
  std::string name;              ///< Empty: from argv[0].
};

/// POST /v1/jobs/ID/checkpoint and /v1/processes/checkpoint.
struct CheckpointRequest {
  std::optional<bool> leave_running;  ///< Default: [jobs] leave_running.
  std::string export_dir;             ///< Empty: [jobs] dump_dir (empty: no export).
  bool tcp_established = false;
};

class JobManager {
 public:
  /// `state_dir`: where jobs.json and the logs live.
  JobManager(NodeConfig config, std::string state_dir, Logger log);
  ~JobManager();
  JobManager(const JobManager&) = delete;
  JobManager& operator=(const JobManager&) = delete;

  /// Makes archd a child subreaper, loads the jobs (running ones become detached or lost)
  /// and starts the reaper thread.
  Result<void> start();
  void stop();
  /// Where job events go (archd: its event log): kind "job", namespace "jobs", the job id,
  /// outcome started | exited | lost | checkpointed | checkpoint-failed | restored |
  /// restore-failed | removed. Safe to set at any time.
  void set_event_sink(std::function<void(Event)> sink);

  Result<JobRecord> run(JobRunRequest request);
  std::vector<JobRecord> list();
  /// By id, or by name when one job has it. ENOENT when none.
  Result<JobRecord> get(const std::string& id_or_name);
  /// Up to `max` bytes of the job's log from `offset`; the new offset is offset + size.
  Result<std::string> read_log(const std::string& id_or_name, uint64_t offset, std::size_t max);
  /// Sends `signal` to the job's process group. EINVAL when it is not running.
  Result<JobRecord> kill(const std::string& id_or_name, int signal);
  /// Forgets the job: its record, log and checkpoints (exported archives stay). EBUSY while
  /// it runs unless `force` (then it is killed first).
  Result<void> remove(const std::string& id_or_name, bool force);
  /// CRIU dump into the store (and an archive). {"job", "checkpoint", "archive",
  /// "archive_bytes", "warnings", "seconds"}.
  Result<nlohmann::json> checkpoint(const std::string& id_or_name, const CheckpointRequest& req);
  /// Restores a job from its newest checkpoint, or from `archive` (then `id_or_name` may be
  /// empty: the job comes from the archive). EBUSY while the job runs.
  Result<JobRecord> restore(const std::string& id_or_name, const std::string& archive);
  /// Adopts a process archd did not start and checkpoints it.
  Result<nlohmann::json> checkpoint_process(pid_t pid, const CheckpointRequest& req);
  /// Restores a process checkpoint: a checkpoint directory or an archive.
  Result<JobRecord> restore_process(const std::string& path);
  /// A drain: every running job checkpointed (and stopped; exported to [jobs] dump_dir when
  /// set), [agent] finalize_parallel at once; none started after `deadline_seconds`.
  /// {"jobs": [{"id", "name", "result": "checkpointed"|"failed"|"skipped", "detail"}]}.
  nlohmann::json checkpoint_all(double deadline_seconds);

  /// The archives being imported by restores right now:
  /// {"imports": [{"archive", "done", "total"}]} (bytes read of each archive, its size).
  nlohmann::json imports() const;

 private:
  struct Busy;
  Result<JobRecord*> find_locked(const std::string& id_or_name);
  /// Refuses a running or busy job, else marks it busy (mutex_ held).
  Result<void> claim_for_restore_locked(const JobRecord& rec);
  Result<nlohmann::json> checkpoint_job(const std::string& id, const CheckpointRequest& req,
                                        std::vector<std::string> warnings);
  Result<JobRecord> restore_one(const std::string& id_or_name, const std::string& archive);
  void mark_dumped(const std::string& id, const char* state, pid_t root);
  Result<UniqueFd> open_log_for_restore(const JobRecord& rec, const std::string& log_key);
  Result<JobRecord> restore_tree(JobRecord rec, const JobRestoreSource& src);
  Result<JobRecord> restore_imported(const std::string& id_hint, const std::string& path,
                                     bool is_archive);
  void reap_loop();
  void reap_once();
  void save_locked();
  void emit_locked(const std::string& id, std::string outcome, std::string detail,
                   double duration_ms = 0);
  void emit(const std::string& id, std::string outcome, std::string detail, double duration_ms = 0);
  std::string job_dir(const std::string& id) const;

  NodeConfig config_;
  std::string state_dir_;
  Logger log_;
  JobStoreConfig store_;  ///< The store and CRIU of the job pipeline.

  std::mutex mutex_;  // Everything below.
  std::map<std::string, JobRecord> jobs_;
  std::set<std::string> busy_;    ///< Jobs in a checkpoint, restore or remove.
  std::set<pid_t> reap_quietly_;  ///< Dumped roots: exit expected, not recorded.
  bool stopping_ = false;
  std::function<void(Event)> sink_;
  std::condition_variable wake_;
  std::thread reaper_;

  struct ImportProgress {
    uint64_t done = 0, total = 0;
  };
  mutable std::mutex imports_mutex_;               // imports_ only: updated while an import reads.
  std::map<std::string, ImportProgress> imports_;  ///< By archive path.
};

}  // namespace arch::agent
