// JobRestore: the restore half of a process job's pipeline, usable without archd.
// A source is either the job's newest verified checkpoint in the store, or an archive (or
// checkpoint directory) from anywhere, unpacked into a scratch key of the store and
// verified against its manifest before anything is believed. Either way CRIU restores from
// a private scratch copy (it writes its log beside the images), with the original pids
// (they must be free first: wait_pids_free) and the root as the caller's child.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "base/error.h"
#include "jobs/job_checkpoint.h"
#include "store/checkpoint_archive.h"
#include "store/manifest.h"

namespace arch {

/// A job checkpoint ready to restore: its scratch copy, job.json and manifest. Holds the
/// store key's lock; the scratch copy (for an import, its whole scratch key) is removed
/// with this object. Move-only.
class JobRestoreSource {
 public:
  JobRestoreSource(JobRestoreSource&&) noexcept;
  JobRestoreSource& operator=(JobRestoreSource&&) noexcept;
  ~JobRestoreSource();

  /// The scratch copy: images/ inside; CRIU's restore.log goes here.
  [[nodiscard]] const std::string& dir() const;
  [[nodiscard]] const JobCheckpointFile& file() const;
  [[nodiscard]] const Manifest& manifest() const;
  /// What it came from: the committed checkpoint directory, or the imported path.
  [[nodiscard]] const std::string& origin() const;

  struct State;

 private:
  friend Result<JobRestoreSource> open_stored_job(const JobStoreConfig&, const std::string&);
  friend Result<JobRestoreSource> import_job(const JobStoreConfig&, const std::string&, bool,
                                             const ByteProgress&);
  explicit JobRestoreSource(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

/// The newest committed checkpoint of job `id` that verifies (ENOENT: none), with a scratch
/// copy of it (hard links where possible).
Result<JobRestoreSource> open_stored_job(const JobStoreConfig& config, const std::string& id);

/// An archive (`is_archive`) or a checkpoint directory from anywhere, unpacked or linked into
/// a scratch key "import-<random>" of the store, then checked: a manifest that verifies, the
/// "jobs" namespace, a job.json naming a job with a valid id. EINVAL for anything else.
/// `progress` is called with the archive's bytes read so far and its size.
Result<JobRestoreSource> import_job(const JobStoreConfig& config, const std::string& path,
                                    bool is_archive, const ByteProgress& progress = {});

/// The pids a restore of `file` needs free: the dumped tree and `root` (the recorded pid).
std::vector<pid_t> pids_to_free(const JobCheckpointFile& file, pid_t root);

/// Waits (up to `timeout`) until no process has one of `pids` as its pid, session or process
/// group, reaping those that are our zombies. EBUSY, naming the holder, when time runs out:
/// CRIU restores a job with its original pids.
Result<void> wait_pids_free(const std::vector<pid_t>& pids, std::chrono::milliseconds timeout);

/// CRIU restore of `source` (the pids must be free). `log_fd` (or -1) is handed to the tree
/// in place of the job's log (key file().log_key). CRIU's log is also copied to `keep_log`
/// when that is set, whether or not the restore worked. Returns the root's pid: our child.
Result<pid_t> restore_job_tree(const JobStoreConfig& config, const JobRestoreSource& source,
                               int log_fd, const std::string& keep_log);

}  // namespace arch
