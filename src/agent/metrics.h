// Metrics: archd's counters and gauges in the Prometheus text exposition format 0.0.4
// (# HELP / # TYPE lines, then `name{label="value"} number` samples; histograms as
// cumulative _bucket{le=...} samples ending in le="+Inf", then _sum and _count).
#pragma once

#include <cstdint>
#include <map>
#include <string>
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

/// The counters archd keeps across restarts (in its state file).
struct Counters {
  uint64_t checkpoints_ok = 0;              ///< Checkpoints archd made that committed.
  uint64_t checkpoints_failed = 0;          ///< Checkpoints archd made that failed.
  uint64_t checkpoints_skipped = 0;         ///< Containers a drain did not start by its deadline.
  uint64_t checkpoint_bytes = 0;            ///< Bytes committed by those checkpoints.
  uint64_t restores_ok = 0;                 ///< Restores seen (registry + engine log evidence).
  uint64_t restores_failed = 0;             ///< Checkpoints moved aside (failed-* dirs) seen.
  std::map<std::string, uint64_t> notices;  ///< "spot", "rebalance", "manual".
  Histogram checkpoint_seconds;
  Histogram restore_seconds;   ///< Restores seen: create to runc restore done.
  uint64_t restore_bytes = 0;  ///< Bytes of the checkpoints those restores read.
  bool operator==(const Counters&) const = default;
};

/// What one scrape shows: the counters and the live gauges.
struct MetricsSnapshot {
  Counters counters;
  std::size_t managed_containers = 0;
  std::size_t quarantined_checkpoints = 0;
  bool draining = false;
};

/// The Content-Type of render_metrics()'s output.
inline constexpr const char* kMetricsContentType = "text/plain; version=0.0.4; charset=utf-8";

/// The snapshot in the text exposition format (every metric always present, 0 when unseen).
std::string render_metrics(const MetricsSnapshot& snapshot);

/// A sample value as Prometheus writes it: integers without a fraction, "+Inf", "NaN".
std::string format_sample_value(double value);

}  // namespace arch::agent
