// JobCheckpoint: the checkpoint half of a process job's pipeline, usable without archd.
// check the process -> lock the store key (namespace "jobs", key = job id) -> staging ->
// CRIU dump through its RPC (images/ and criu/dump.log) -> job.json -> SHA-256 manifest and
// commit by rename -> optionally one archive of the committed checkpoint. The caller owns
// the job table: between dump_job() and commit_job_dump() it records that the tree is gone
// (unless it was left running), and afterwards where the checkpoint went.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "jobs/job_record.h"
#include "store/checkpoint_archive.h"
#include "store/checkpoint_store.h"

namespace arch {

struct NodeConfig;

/// Where job checkpoints live and which CRIU makes and restores them.
struct JobStoreConfig {
  std::string store_path;
  int keep = 2;      ///< Committed generations kept per job.
  std::string criu;  ///< The criu binary.
  /// The node keys that seal commits and check restores ([keys]; nullptr: none, so
  /// checkpoints and restores are refused naming `archctl key init`).
  std::shared_ptr<const Keyring> keys;
  uint64_t max_archive_bytes = uint64_t{256} << 30;  ///< [restore] caps on an imported archive.
  uint64_t max_entries = 4'000'000;
  uint64_t ghost_limit = uint64_t{64} << 20;  ///< [checkpoint] ghost_limit.
  int failed_dumps_kept = 3;                  ///< [checkpoint] failed_dumps_kept.
  bool stream_images = false;                 ///< [jobs] stream_images (criu/criu_stream.h).
  /// [jobs] stream_compression (auto | off | zstd) and stream_compression_level.
  std::string stream_compression = "auto";
  int stream_compression_level = 0;
  /// [state] dir: where the store's write rate is kept (container/deadline_plan.h); the
  /// streamed dump's compression level is chosen against it. Empty: none kept.
  std::string state_dir{};
};

/// From the node config: [store] path and keep; [runtime] criu, else the first of
/// /opt/arch/criu/bin/criu, /usr/local/sbin/criu, /usr/sbin/criu that is executable.
JobStoreConfig job_store_config(const NodeConfig& config);

/// job.json in a job checkpoint: what a restore needs besides CRIU's images.
struct JobCheckpointFile {
  JobRecord job;                 ///< As it was at the dump (running there).
  bool has_job = false;          ///< Whether the file had a "job" object (an import requires it).
  bool shell_job = false;        ///< The root was not its session's leader.
  bool tcp_established = false;  ///< Established TCP connections were dumped.
  std::vector<pid_t> pids;       ///< The dumped tree, parents first: CRIU restores these pids.
  std::string log_key;           ///< CRIU's key of the job's log file (empty: none).
};

nlohmann::json job_file_json(const JobCheckpointFile& file);
/// Parses job.json; EINVAL when it is not JSON or a field has the wrong type.
Result<JobCheckpointFile> parse_job_file(std::string_view text);

/// How to dump.
struct JobDumpRequest {
  bool leave_running = false;  ///< Else CRIU kills the tree once it is dumped.
  bool tcp_established = false;
};

/// A dumped job not yet committed: the key lock and the staging directory, which is
/// discarded with this object unless committed. Move-only.
class JobDump {
 public:
  [[nodiscard]] const JobCheckpointFile& file() const { return file_; }
  [[nodiscard]] bool leave_running() const { return leave_running_; }
  [[nodiscard]] double dump_ms() const { return dump_ms_; }
  /// When the dump finished (seconds since the epoch): the checkpoint's time.
  [[nodiscard]] long dumped_at() const { return dumped_at_; }

 private:
  friend Result<JobDump> dump_job(const JobStoreConfig&, const JobRecord&, const JobDumpRequest&);
  friend Result<JobCheckpointRef> commit_job_dump(const JobStoreConfig&, JobDump&&);
  JobDump(CheckpointStore store, KeyLock lock, Staging staging)
      : store_(std::move(store)), lock_(std::move(lock)), staging_(std::move(staging)) {}
  CheckpointStore store_;
  KeyLock lock_;
  Staging staging_;
  JobCheckpointFile file_;
  bool leave_running_ = false;
  double dump_ms_ = 0;
  long dumped_at_ = 0;
  std::string stream_id_;                   ///< Set when the images were streamed (sealed chunks).
  uint64_t stream_plain_ = 0;               ///< Image bytes CRIU streamed.
  uint64_t stream_stored_ = 0;              ///< Bytes the sealed images hold.
  uint64_t stream_chunks_ = 0;              ///< Chunks sealed.
  uint64_t stream_compressed_ = 0;          ///< Of which stored as zstd frames.
  double store_bps_ = 0;                    ///< The store's kept rate the level was chosen by.
  std::vector<ManifestFile> stream_files_;  ///< Sealed images, hashed as written.
};

/// Checks that `job`'s pid is still the job's process (EINVAL: gone), locks its key in the
/// store (removing stale staging directories) and CRIU-dumps its process tree into a new
/// staging directory. A failed dump leaves the job running.
Result<JobDump> dump_job(const JobStoreConfig& config, const JobRecord& job,
                         const JobDumpRequest& request);

/// Writes job.json and commits the dump under a manifest (node, argv[0], CRIU and kernel
/// versions, dump time, {"kind", "name", "leave_running"}). Returns the committed path and
/// its creation time; no archive.
Result<JobCheckpointRef> commit_job_dump(const JobStoreConfig& config, JobDump&& dump);

/// Removes every checkpoint of job `id` from the store (its whole key; exported archives
/// stay). Nothing to do when it has none.
Result<void> remove_job_checkpoints(const JobStoreConfig& config, const std::string& id);

/// An export directory must be absolute and exist (EINVAL otherwise).
Result<void> check_export_dir(const std::string& dir);

/// An exported job checkpoint.
struct JobExport {
  std::string archive;  ///< <dir>/<name>_<UTC time>.tar.zst (.tar uncompressed).
  uint64_t bytes = 0;
  double export_ms = 0;
};

/// Writes the committed checkpoint `ckpt` of the job `name`, made at `when`, as one archive
/// into `dir`.
Result<JobExport> export_job_checkpoint(const std::string& ckpt, const std::string& dir,
                                        std::string_view name, long when,
                                        const ExportOptions& options);

}  // namespace arch
