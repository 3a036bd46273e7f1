// Periodic: the interval policy and one leave-running checkpoint.
#include "container/periodic.h"

#include <fmt/core.h>

#include "base/duration.h"

namespace arch {

Result<CheckpointInterval> checkpoint_interval(const NodeConfig& config, std::string_view asked) {
  CheckpointInterval out;
  if (asked.empty()) {
    out.every = config.checkpoint.interval;
  } else if (asked == "off") {
    return out;
  } else if (!config.checkpoint.container_interval) {
    // The node decides how often; a container may only opt out.
    out.every = config.checkpoint.interval;
    out.note = fmt::format(
        "ARCH_CHECKPOINT_INTERVAL ignored: the node sets the interval ([checkpoint] "
        "container_interval = deny; node interval {})",
        out.every.count() > 0 ? fmt::format("{} s", out.every.count()) : std::string("off"));
  } else {
    if (asked.size() > 32) {
      return fail(ErrorKind::kInvalidInput,
                  "ARCH_CHECKPOINT_INTERVAL is longer than 32 characters");
    }
    auto d = parse_duration(asked);
    if (!d || d->count() <= 0) {
      return fail(ErrorKind::kInvalidInput,
                  "ARCH_CHECKPOINT_INTERVAL must be a duration (90s, 15m, 1h) or off, not \"" +
                      std::string(asked) + "\"");
    }
    out.every = *d;
  }
  if (out.every.count() > 0 && out.every < config.checkpoint.min_interval) {
    out.note = fmt::format("interval {} s raised to the node's min_interval {} s",
                           out.every.count(), config.checkpoint.min_interval.count());
    out.every = config.checkpoint.min_interval;
  }
  return out;
}

Result<PeriodicOutcome> periodic_checkpoint(const ContainerRecord& c, const NodeConfig& config,
                                            const std::string& runc) {
  CheckpointOptions options;
  options.leave_running = true;
  // Pre-copy keeps the frozen time short where the kernel tracks dirty pages; without it
  // ContainerCheckpoint dumps plainly and notes why.
  options.pre_copy = config.checkpoint.pre_copy != "off";
  auto done = checkpoint_container(c, config, runc, options);
  if (!done) return std::unexpected(done.error());
  PeriodicOutcome out;
  for (const char* phase : {"rootfs", "workdir", "dump", "commit", "end"}) {
    if (auto it = done->timings_ms.find(phase); it != done->timings_ms.end()) {
      out.frozen_ms += it->second;
    }
  }
  out.checkpoint = std::move(*done);
  return out;
}

CheckpointInterval group_checkpoint_interval(const std::vector<CheckpointInterval>& members) {
  CheckpointInterval out;
  for (const auto& m : members) {
    if (m.every.count() > 0 && (out.every.count() == 0 || m.every < out.every)) out.every = m.every;
  }
  return out;
}

Result<GroupCheckpointOutcome> periodic_group_checkpoint(const NodeGroup& group,
                                                         const NodeConfig& config,
                                                         const std::string& runc) {
  CheckpointOptions options;
  options.leave_running = true;
  return checkpoint_group(group, config, runc, options);
}

}  // namespace arch
