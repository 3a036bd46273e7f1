// Periodic: how often a container is checkpointed while it runs (ARCH_CHECKPOINT_INTERVAL
// within the node's bounds), and one such checkpoint: freeze, rootfs diff, dump, commit as
// a new generation, thaw. The container keeps running; a node lost without notice resumes
// the job from the newest generation.
#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "config/node_config.h"
#include "container/checkpoint.h"
#include "container/group_checkpoint.h"
#include "managed/container_registry.h"

namespace arch {

struct CheckpointInterval {
  std::chrono::seconds every{0};  ///< 0: no periodic checkpoints.
  std::string note;               ///< Why it differs from what the container asked for.
};

/// The interval for a container whose ARCH_CHECKPOINT_INTERVAL is `asked` (empty: not
/// set): the node's [checkpoint] interval when not set, none for "off", else the duration,
/// raised to [checkpoint] min_interval. A malformed value is an error (not scheduled).
Result<CheckpointInterval> checkpoint_interval(const NodeConfig& config, std::string_view asked);

/// What one periodic checkpoint did.
struct PeriodicOutcome {
  CheckpointOutcome checkpoint;
  double frozen_ms = 0;  ///< From the pause to the thaw (rootfs diff, dump, commit, thaw).
};

/// One periodic checkpoint of `c`: pre-copy where the kernel tracks dirty pages (else a
/// plain dump, its notes say so), the container left running.
Result<PeriodicOutcome> periodic_checkpoint(const ContainerRecord& c, const NodeConfig& config,
                                            const std::string& runc);

/// The interval of a group (group_checkpoint.h) whose members' intervals are `members`
/// (each from checkpoint_interval): the smallest one that is not off, so that no member
/// loses more than it asked; off when every member's is. A member that asked "off" is still
/// checkpointed with its group (a group is checkpointed whole or not at all).
CheckpointInterval group_checkpoint_interval(const std::vector<CheckpointInterval>& members);

/// One periodic checkpoint of a group: every member frozen, dumped and committed as one
/// group generation, all left running (checkpoint_group with leave_running). Never one
/// member alone.
Result<GroupCheckpointOutcome> periodic_group_checkpoint(const NodeGroup& group,
                                                         const NodeConfig& config,
                                                         const std::string& runc);

}  // namespace arch
