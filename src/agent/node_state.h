// NodeState: what archd remembers across restarts, in [agent] state_file as versioned JSON
// (written to a temp file, fsynced and renamed; a newer format version is refused, an
// older one read): draining or not and why, the last notice, the recent drains with their
// reports, and the metrics counters.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "managed/activity_log.h"
#include "metrics.h"

namespace arch::agent {

inline constexpr int kStateFormatVersion = 1;
/// Drains kept in the state (oldest dropped first).
inline constexpr std::size_t kMaxDrains = 10;

/// What started a drain.
enum class DrainKind { kManual, kNotice, kRebalance };
/// "manual", "notice", "rebalance".
std::string_view to_string(DrainKind kind);
Result<DrainKind> parse_drain_kind(std::string_view text);

/// One drain: finalize of every running container with a deadline.
struct DrainRecord {
  int64_t id = 0;
  DrainKind kind = DrainKind::kManual;
  std::string reason{};
  long requested = 0;  ///< Seconds since the epoch.
  double deadline_seconds = 0;
  /// "running", "done", "cancelled" (by an undrain), "interrupted" (archd stopped).
  std::string state = "running";
  long finished = 0;
  int64_t resumed_from = 0;  ///< The interrupted drain this one continues (0: none).
  std::size_t total = 0;     ///< Containers chosen.
  std::size_t done = 0;      ///< Containers finished so far.
  /// finalize_report_json() when finished; while running {"containers": [the done ones]}.
  nlohmann::json report = nlohmann::json::object();
  bool operator==(const DrainRecord&) const = default;
};

/// The last notice archd was told about.
struct NoticeRecord {
  std::string kind;       ///< "spot" or "rebalance".
  std::string action;     ///< "terminate", "stop", "hibernate", "rebalance".
  std::string time_text;  ///< The notice's time as the service sent it.
  long seen = 0;          ///< When archd first saw it.
  bool operator==(const NoticeRecord&) const = default;
};

struct NodeState {
  bool draining = false;
  DrainKind drain_kind = DrainKind::kManual;
  std::string drain_reason;
  long draining_since = 0;
  std::optional<NoticeRecord> last_notice;
  int64_t next_drain_id = 1;
  std::vector<DrainRecord> drains;  ///< Oldest first, at most kMaxDrains.
  Counters counters;
  /// Evidence already seen: restored containers ("ns/id@created", no longer counted: the
  /// activity log counts restores) and failed-* dirs (quarantine events).
  std::vector<std::string> seen_restores;
  std::vector<std::string> seen_quarantined;
  std::vector<std::string> stores;  ///< Checkpoint stores seen in the registry.
  ActivityCursor activity;          ///< How far the node's activity log has been counted.
  bool operator==(const NodeState&) const = default;

  /// The drain with `id`, or nullptr.
  DrainRecord* find_drain(int64_t id);
  /// Appends a drain, dropping the oldest beyond kMaxDrains.
  DrainRecord& add_drain(DrainRecord drain);
};

nlohmann::json drain_json(const DrainRecord& drain);
nlohmann::json state_json(const NodeState& state);
/// Parses state text; refuses a format version newer than kStateFormatVersion.
Result<NodeState> parse_node_state(std::string_view text);

/// Reads the state file; a missing file gives a fresh state.
Result<NodeState> load_node_state(const std::string& path);
/// Writes the state file atomically (0600), creating its directory (0700) when missing.
Result<void> save_node_state(const std::string& path, const NodeState& state);

}  // namespace arch::agent
