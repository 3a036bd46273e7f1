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
#include <string>
#include <string_view>
#include <vector>

#include "checkpoint.h"
#include "container_registry.h"
#include "error.h"
#include "node_config.h"

namespace arch {

enum class FinalizeOutcome {
  kCheckpointed,  ///< Committed; the container has ended.
  kFailed,        ///< The checkpoint failed; the container keeps running.
  kSkipped,       ///< Not started: the deadline had passed, or finalize was cancelled.
};

/// "checkpointed", "failed", "skipped".
std::string_view to_string(FinalizeOutcome outcome);

/// What happened to one container.
struct FinalizeResult {
  ContainerRecord container{};
  FinalizeOutcome outcome = FinalizeOutcome::kSkipped;
  std::string detail{};  ///< The checkpoint directory, or why it failed or was skipped.
  double seconds = 0;    ///< Time spent on its checkpoint.
  uint64_t bytes = 0;    ///< Bytes committed (0 unless checkpointed).
  std::map<std::string, double> timings_ms{};
};

/// One finalize: a result per container (in registry order) and the wall time.
struct FinalizeReport {
  std::vector<FinalizeResult> containers;
  double total_seconds = 0;
  /// Containers not checkpointed (failed or skipped).
  [[nodiscard]] std::size_t not_checkpointed() const;
};

/// Checkpoints one container; the default is checkpoint_container(). Tests pass a fake.
using CheckpointFn = std::function<Result<CheckpointOutcome>(const ContainerRecord&)>;

struct FinalizeOptions {
  double deadline_seconds = 110;  ///< From the call; containers not started by then are skipped.
  int parallel = 4;               ///< Containers checkpointed at once (at least 1).
  /// When set and true, containers not yet started are skipped ("cancelled").
  const std::atomic<bool>* cancel = nullptr;
  /// Called once with the containers chosen, before any checkpoint starts.
  std::function<void(const std::vector<ContainerRecord>&)> on_start{};
  /// Called from the worker threads as each container is done (serialised by finalize).
  std::function<void(const FinalizeResult&)> on_result{};
  CheckpointFn checkpoint{};  ///< Empty: checkpoint_container() with the node's config.
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
/// {"total_seconds", "containers": [{"namespace","id","result","seconds","detail"}]}.
nlohmann::json finalize_report_json(const FinalizeReport& report);

}  // namespace arch
