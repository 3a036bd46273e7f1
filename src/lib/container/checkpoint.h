// Checkpoint: the container checkpoint pipeline
//   validate → lock the key → [pre-copy: CRIU pre-dump while it runs] → freeze (runc
//   pause) → capture the rootfs diff from the overlay upperdir → CRIU dump (runc checkpoint
//   --leave-running, only the pages changed since the pre-dump when there was one) →
//   manifest → commit → end the container (SIGKILL, then thaw so it is taken).
// The container is never ended before its checkpoint is committed: on any failure up to
// and including the commit it is thawed (runc resume) and keeps running, and the staging
// directory is removed. The engine then sees the task exit (137).
// checkpoint_container() runs the steps for one container; ContainerCheckpoint exposes them
// so that finalize can order the work across many (lock and freeze all, then dump in a pool).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/unique_fd.h"
#include "config/node_config.h"
#include "managed/container_registry.h"
#include "runtime/runc_client.h"

namespace arch {

/// The key-lock wait (CheckpointOptions::lock_timeout_s) that ends by `deadline`: whole
/// seconds, at least 1, at most 60.
int lock_timeout_before(std::chrono::steady_clock::time_point deadline);

struct CheckpointOptions {
  bool leave_running = false;  ///< Keep the container running after the dump.
  int lock_timeout_s = 60;
  /// Pre-copy: a CRIU pre-dump while the container runs, then the frozen dump writes only
  /// the pages changed since. Needs the kernel's soft-dirty tracking (criu_dirty_tracking());
  /// without it, or when the pre-dump fails, the checkpoint is a plain dump and its notes
  /// say so.
  bool pre_copy = false;
  /// The rootfs diff's zstd level (1-19); 0 writes it uncompressed; -1: the node config's
  /// [checkpoint] rootfs_compression and zstd_level.
  int rootfs_zstd_level = -1;
  int zstd_threads = -1;  ///< zstd worker threads; 0: one per CPU; -1: the node config's.
  /// Fold this checkpoint's write rate into the store's kept rates (deadline_plan.h). A
  /// finalize turns it off and records its own (its dumps run side by side).
  bool record_rate = true;
  /// A live migration's checkpoint (peer/migrate.h): staged like a group member's
  /// (stage_group_member(): committed with the tasks left frozen in place, so a failure
  /// before the destination runs thaws them), then ended or retracted.
  bool migration = false;
  /// Set by a group checkpoint (container/group_checkpoint.h): the group and the group
  /// generation this member's manifest names (sealed with it). Empty: not in a group.
  std::string group{};
  std::string group_generation{};
};

struct CheckpointOutcome {
  std::string path;  ///< The committed checkpoint directory.
  std::map<std::string, double>
      timings_ms;  ///< pre_dump, freeze, rootfs, dump, commit, end, total.
  uint64_t bytes = 0;
  /// What the user should know about how it was taken ("pre-copy not used: ...").
  std::vector<std::string> notes{};
  std::string pre_copy = "off";  ///< "off", "used", "unavailable" (no soft-dirty), "failed".
};

/// Checkpoints one registered container into its store.
Result<CheckpointOutcome> checkpoint_container(const ContainerRecord& container,
                                               const NodeConfig& config, const std::string& runc,
                                               const CheckpointOptions& options = {});

/// One container's checkpoint taken step by step: begin() (validate, lock, check it runs),
/// pre_copy(), freeze(), finish() (capture, dump, commit, end). A frozen container whose
/// finish() was not reached or failed is thawed, at the latest by the destructor. Move-only.
class ContainerCheckpoint {
 public:
  /// Validates the names, locks the key (waiting up to options.lock_timeout_s) and checks
  /// that the container runs: from `known` when given (e.g. `runc list`), else `runc state`.
  static Result<ContainerCheckpoint> begin(const ContainerRecord& container,
                                           const NodeConfig& config, const std::string& runc,
                                           const CheckpointOptions& options,
                                           const RuncState* known = nullptr);
  ContainerCheckpoint(ContainerCheckpoint&&) noexcept;
  ContainerCheckpoint& operator=(ContainerCheckpoint&&) noexcept;
  ~ContainerCheckpoint();

  /// The pre-dump, when options.pre_copy asked for it and the kernel tracks dirty pages.
  /// Never fails the checkpoint: without it the final dump is a plain one (see notes).
  void pre_copy();
  /// The predicted size of its checkpoint (deadline_plan.h: memory cgroup and writable
  /// layer), for a finalize's plan.
  [[nodiscard]] uint64_t predicted_bytes() const;
  /// Freezes the container. `own_guard`: also start a process that thaws it should this
  /// one die before finish() ends (finalize arms one ThawGuard for all containers instead).
  Result<void> freeze(bool own_guard = true);
  /// Capture → dump → commit → end (freezes first if freeze() was not called).
  Result<CheckpointOutcome> finish();
  /// Thaws the container if it is frozen and not finished (idempotent).
  void abandon();
  /// From another thread while finish() runs: give this checkpoint up because it cannot
  /// finish in time. CRIU, if it is dumping, is ended (dump_progress.h); the flush of its
  /// images to the store before the commit (container/staging_flush.h) is abandoned at its
  /// next step; the staging is removed, the container thawed and left running (also when
  /// finish() would have ended it), and finish() fails with `reason` (stopped() then true).
  /// Refused (false) once the dump can no longer be undone: a dump under CRIU's network
  /// lock or one that ends the tasks itself, and after the commit began.
  bool stop(const std::string& reason);
  /// Whether finish() failed because stop() was called.
  [[nodiscard]] bool stopped() const;
  /// Bytes of its staging known to be written back to the store (the writeback during the
  /// dump, then the flush before the commit), for progress. Thread-safe.
  [[nodiscard]] uint64_t written_back_bytes() const;
  /// The staging directory once finish() made it (for progress), else empty. Thread-safe.
  [[nodiscard]] std::string staging_path() const;

  /// A group member's first phase: freeze (if not yet) → capture → dump (always leaving the
  /// tasks in place, frozen) → commit its generation without pruning older ones. Returns the
  /// committed path; on failure the container is thawed and nothing of it is kept.
  Result<std::string> stage_group_member();
  /// The seal MAC of the generation stage_group_member() committed.
  [[nodiscard]] std::string staged_seal_mac() const;
  /// After the group record is committed: the member's TCP sockets closed without a word to
  /// their peers (repair mode), every task ended, the container thawed; older generations
  /// pruned and member generations of uncommitted group generations removed.
  Result<CheckpointOutcome> end_group_member(const std::vector<std::string>& keep_generations);
  /// The group failed: the generation stage_group_member() committed is removed, and the
  /// container thawed (it keeps running).
  void retract_group_member();

  [[nodiscard]] const ContainerRecord& container() const;
  /// The argv of `runc resume` for this container (for a batch ThawGuard).
  [[nodiscard]] std::vector<std::string> resume_argv() const;

 private:
  struct State;
  explicit ContainerCheckpoint(std::unique_ptr<State> state);
  std::unique_ptr<State> s_;
};

/// Thaws containers if this process dies between their freeze and the end of the pipeline
/// (kill -9 of archctl, OOM): a child in its own session waits on a pipe whose write end
/// only we hold; EOF without the "done" line means we died, and it runs every resume
/// command (three rounds: a pause already under way when we died lands late). disarm()
/// sends "done" and reaps it. Move-only.
class ThawGuard {
 public:
  static Result<ThawGuard> arm(const std::vector<std::vector<std::string>>& resume_argvs);
  ThawGuard(ThawGuard&& other) noexcept;
  ThawGuard& operator=(ThawGuard&&) = delete;
  ~ThawGuard() { disarm(); }
  void disarm();

 private:
  ThawGuard() = default;
  pid_t pid_ = -1;
  UniqueFd write_end_;
};

/// Versions of the tools a checkpoint depends on, recorded in its manifest.
struct ToolVersions {
  std::string criu, runc, kernel;
};
ToolVersions tool_versions(const NodeConfig& config, const std::string& runc);

}  // namespace arch
