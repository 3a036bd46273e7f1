// Metrics: archd's counters and gauges in the Prometheus text exposition format 0.0.4
// (# HELP / # TYPE lines, then `name{label="value"} number` samples; histograms as
// cumulative _bucket{le=...} samples ending in le="+Inf", then _sum and _count).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace arch::agent {

/// Upper bounds (seconds) of the checkpoint and restore duration histograms' buckets:
/// from a small container's tens of milliseconds to a large one's minutes. (Counts kept
/// with other bounds in an older state file are dropped; sum and count stay.)
inline const std::vector<double> kCheckpointSecondsBuckets = {
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600};

/// A Prometheus histogram: per-bucket counts (not cumulative; the last is +Inf), sum, count.
struct Histogram {
  std::vector<double> bounds = kCheckpointSecondsBuckets;
  std::vector<uint64_t> counts = std::vector<uint64_t>(kCheckpointSecondsBuckets.size() + 1);
  double sum = 0;
  uint64_t count = 0;

  /// Adds one observation.
  void observe(double value);
  bool operator==(const Histogram&) const = default;
};

/// One operation (checkpoint or restore) from one source: results, durations, bytes.
struct OperationCounters {
  uint64_t ok = 0;
  uint64_t failed = 0;
  uint64_t bytes = 0;  ///< Committed (checkpoints) or read (restores) by the ok ones.
  Histogram seconds;   ///< Durations of the ok and failed ones.
  /// Counts one result.
  void count(bool success, double seconds_taken, uint64_t bytes_moved);
  bool operator==(const OperationCounters&) const = default;
};

/// The `source` label values, always exported (0 when unseen): who made a checkpoint
/// (archd's drains, `archctl container finalize`, `archctl container checkpoint`, arch-runc on
/// an engine's stop, archd's periodic checkpoints, process jobs) and who restored (arch-runc on the
/// engine's create, jobs).
inline const std::vector<std::string> kCheckpointSources = {"drain",   "finalize", "archctl",
                                                            "on_stop", "periodic", "job"};
inline const std::vector<std::string> kRestoreSources = {"create", "job"};

/// The counters archd keeps across restarts (in its state file).
struct Counters {
  std::map<std::string, OperationCounters> checkpoints;  ///< By source (kCheckpointSources).
  std::map<std::string, OperationCounters> restores;     ///< By source (kRestoreSources).
  uint64_t checkpoints_skipped = 0;         ///< Containers a drain did not start by its deadline.
  std::map<std::string, uint64_t> notices;  ///< "spot", "rebalance", "manual".
  uint64_t activity_invalid = 0;            ///< Activity-log lines that were not records.
  bool operator==(const Counters&) const = default;
};

/// The age of one key's newest committed checkpoint.
struct KeyAge {
  std::string owner{};
  std::string key{};
  double seconds = 0;
  bool operator==(const KeyAge&) const = default;
};

/// The reclaim-notice watcher's health.
struct WatcherHealth {
  bool enabled = false;
  long last_success = 0;  ///< Seconds since the epoch of the last good poll (0: none yet).
  uint64_t consecutive_errors = 0;
};

/// What one scrape shows: the counters and the live gauges.
struct MetricsSnapshot {
  Counters counters;
  std::size_t managed_containers = 0;
  std::size_t quarantined_checkpoints = 0;
  bool draining = false;
  std::vector<KeyAge> key_ages;  ///< At most [agent] metrics_max_keys.
  std::size_t keys = 0;          ///< Keys with a committed checkpoint (exported or not).
  WatcherHealth watcher;
};

/// The Content-Type of render_metrics()'s output.
inline constexpr const char* kMetricsContentType = "text/plain; version=0.0.4; charset=utf-8";

/// The snapshot in the text exposition format (every metric always present, 0 when unseen).
std::string render_metrics(const MetricsSnapshot& snapshot);

/// A label value escaped as the exposition format wants (\\, \", \n).
std::string escape_label_value(std::string_view value);

/// A sample value as Prometheus writes it: integers without a fraction, "+Inf", "NaN".
std::string format_sample_value(double value);

}  // namespace arch::agent
