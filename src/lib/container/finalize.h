// Finalize: checkpoint every running ARCH-enabled container of the node, in parallel,
// within a deadline (what a reclaim notice or a drain asks for). Used by
// `archctl container finalize` and by archd's drains.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "config/node_config.h"
#include "container/checkpoint.h"
#include "container/group_checkpoint.h"
#include "managed/container_registry.h"

namespace arch {

enum class FinalizeOutcome {
  kCheckpointed,  ///< Committed; the container has ended.
  kFailed,        ///< The checkpoint failed; the container keeps running.
  kSkipped,       ///< Not started: the deadline had passed, or finalize was cancelled.
  kStopped,       ///< Started, then stopped: it could not finish in time; it keeps running.
};

/// "checkpointed", "failed", "skipped", "stopped".
std::string_view to_string(FinalizeOutcome outcome);

/// What happened to one container.
struct FinalizeResult {
  ContainerRecord container{};
  FinalizeOutcome outcome = FinalizeOutcome::kSkipped;
  std::string detail{};  ///< The checkpoint directory, or why it failed or was skipped.
  double seconds = 0;    ///< Time spent on its checkpoint.
  uint64_t bytes = 0;    ///< Bytes committed (0 unless checkpointed).
  std::map<std::string, double> timings_ms{};
  std::vector<std::string> notes{};  ///< How it was taken ("pre-copy not used: ...").
  std::string pre_copy = "off";      ///< "off", "used", "unavailable", "failed".
  double finished_s = 0;             ///< When it was done, from finalize's start.
  uint64_t predicted_bytes = 0;      ///< The plan's size estimate (deadline_plan.h).
  double predicted_finish_s = 0;     ///< When the plan expected it done (from its start).
};

/// One finalize: a result per container (in registry order) and the wall time.
struct FinalizeReport {
  std::vector<FinalizeResult> containers;
  double total_seconds = 0;
  int parallel = 0;  ///< The dump pool's size.
  /// Wall time of each phase: "list", "lock", "pre_copy", "plan", "freeze", "dump".
  std::map<std::string, double> phase_seconds;
  /// Per store: the rate and mode its plan assumed (deadline_plan.h), one line.
  std::map<std::string, std::string> plans;
  /// Containers not checkpointed (failed or skipped).
  [[nodiscard]] std::size_t not_checkpointed() const;
};

/// Checkpoints one container; the default is checkpoint_container(). Tests pass a fake.
using CheckpointFn = std::function<Result<CheckpointOutcome>(const ContainerRecord&)>;

/// Whether finalize pre-copies (CRIU pre-dump of each running container, then a final
/// dump of what changed). kAuto: when the kernel tracks dirty pages and the deadline leaves
/// room (at least kPreCopyMinDeadlineSeconds). Without soft-dirty tracking every mode
/// falls back to plain dumps, each result saying so.
enum class PreCopyMode { kOff, kOn, kAuto };
inline constexpr double kPreCopyMinDeadlineSeconds = 60;
/// Parses "off", "on", "auto".
Result<PreCopyMode> parse_pre_copy_mode(std::string_view text);

/// The dump pool's size when none is asked for: sized to the machine's CPUs (see
/// bench/RESULTS.md, "Finalize at scale", for the measurement behind it).
int default_finalize_parallel();

struct FinalizeOptions {
  double deadline_seconds = 110;  ///< From the call; containers not started by then are skipped.
  int parallel = 0;               ///< Containers dumped at once; 0: default_finalize_parallel().
  /// When set and true, containers not yet started are skipped ("cancelled").
  const std::atomic<bool>* cancel = nullptr;
  /// Called once with the containers chosen, before any checkpoint starts.
  std::function<void(const std::vector<ContainerRecord>&)> on_start{};
  /// Called from the worker threads as each container is done (serialised by finalize).
  std::function<void(const FinalizeResult&)> on_result{};
  CheckpointFn checkpoint{};  ///< Empty: checkpoint_container() with the node's config.
  /// Unset: the node config's [checkpoint] pre_copy.
  std::optional<PreCopyMode> pre_copy{};
  /// Freeze every container before the first dump (a consistent cut across the node, and
  /// running workloads stop competing with the dumps for CPU and disk). false: each
  /// container is frozen just before its own dump.
  bool freeze_first = true;
  /// Plan per store before freezing (deadline_plan.h); false: every container, in order,
  /// options.parallel at once (for comparisons).
  bool plan = true;
  /// With the plan: follow each dump of a store-bound (one at a time) store and stop one
  /// whose projected finish passes the deadline less the margin (CRIU ended, staging
  /// removed, container thawed), then re-plan the time left.
  bool stop_late_dumps = true;
  /// How each group (group_checkpoint.h) is checkpointed as one unit by the deadline: all
  /// of its members or none. Empty: this node's members (checkpoint_group with
  /// drain_group_limits). archd and archctl pass the cross-node coordinator
  /// (peer/group_peers.h, checkpoint_group_for_drain) when [peers] nodes are configured.
  std::function<Result<GroupCheckpointOutcome>(const NodeGroup&,
                                               std::chrono::steady_clock::time_point deadline)>
      group_checkpoint{};
};

/// The registered containers whose runc state is "running".
std::vector<ContainerRecord> running_containers(const NodeConfig& config, const std::string& runc);

/// Checkpoints `containers` with options.parallel workers until options.deadline_seconds
/// (measured from `start`) has passed; one result per container, in the given order.
FinalizeReport finalize_containers(std::vector<ContainerRecord> containers,
                                   const NodeConfig& config, const std::string& runc,
                                   const FinalizeOptions& options,
                                   std::chrono::steady_clock::time_point start);

/// running_containers() then finalize_containers(), the deadline counted from this call.
FinalizeReport finalize_node(const NodeConfig& config, const std::string& runc,
                             const FinalizeOptions& options = {});

/// The report as `archctl container finalize -o json` prints it:
/// {"total_seconds", "parallel", "phase_seconds", "containers": [{"namespace", "id",
/// "result", "seconds", "detail", "pre_copy", "notes", "timings_ms"}]}.
nlohmann::json finalize_report_json(const FinalizeReport& report);

}  // namespace arch
