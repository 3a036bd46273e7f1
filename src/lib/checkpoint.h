// Checkpoint: the container checkpoint pipeline
//   validate → lock the key → freeze (runc pause) → capture the rootfs diff from the
//   overlay upperdir → CRIU dump (runc checkpoint --leave-running) → manifest → commit
//   → end the container (SIGKILL, then thaw so it is taken).
// The container is never ended before its checkpoint is committed: on any failure up to
// and including the commit it is thawed (runc resume) and keeps running, and the staging
// directory is removed. The engine then sees the task exit (137).
#pragma once

#include <map>
#include <string>

#include "container_registry.h"
#include "error.h"
#include "node_config.h"

namespace arch {

struct CheckpointOptions {
  bool leave_running = false;  ///< Keep the container running after the dump.
  int lock_timeout_s = 60;
};

struct CheckpointOutcome {
  std::string path;                          ///< The committed checkpoint directory.
  std::map<std::string, double> timings_ms;  ///< freeze, rootfs, dump, commit, total.
  uint64_t bytes = 0;
};

/// Checkpoints one registered container into its store.
Result<CheckpointOutcome> checkpoint_container(const ContainerRecord& container,
                                               const NodeConfig& config, const std::string& runc,
                                               const CheckpointOptions& options = {});

/// Versions of the tools a checkpoint depends on, recorded in its manifest.
struct ToolVersions {
  std::string criu, runc, kernel;
};
ToolVersions tool_versions(const NodeConfig& config, const std::string& runc);

}  // namespace arch
