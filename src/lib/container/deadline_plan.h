// DeadlinePlan: which containers a finalize attempts, in which order and how many at once,
// so that what it starts can finish before the deadline. When the store, not the CPU, is
// the bottleneck, parallel dumps only share the store's bandwidth and all finish late (six
// 1 GiB containers, a 10 s deadline: four dumps started, none done in time); one at a time,
// smallest first, as many as fit are saved.
//
// Inputs: each container's predicted checkpoint size (its memory cgroup's anonymous and
// shared memory plus its writable layer) and the store's write rates, measured by earlier
// checkpoints and kept per store in <state dir>/store-rates.json (root's own state, never
// a tenant's file): `single` (one dump at a time, bytes committed per second of rootfs
// capture + dump + commit) and `aggregate` (bytes per second of a whole finalize's dump
// phase with several dumps at once).
//
// Priorities (ARCH_PRIORITY, honoured up to the node's [checkpoint] priority_max): when not
// everything fits, the admitted set maximises the total priority instead of the count. On
// the one store-bound stream this is a 0/1 knapsack: each container takes its dump time
// (bytes / rate + fixed cost) out of the time left, worth its priority. Solved exactly by
// dynamic programming over the time budget cut into kKnapsackSlots slots (each container's
// time rounded up to whole slots, so a chosen set always fits): O(containers x slots).
// Among sets of the best total it takes the one that needs the least time; the admitted
// containers then run smallest first (the same total time, each finishes earliest).
// With equal priorities the plan is the plain smallest-first greedy (optimal for a count).
//
// While a dump runs, finalize projects its finish from its progress (dump_will_miss()) and
// stops a dump that can no longer finish in time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"

namespace arch {

/// A store's measured write rates (bytes per second; 0: not measured yet).
struct StoreRates {
  double single_bps = 0;
  double aggregate_bps = 0;
};

/// Checkpoints smaller than this are not rate samples: their time is mostly fixed costs.
inline constexpr uint64_t kMinRateSampleBytes = uint64_t{32} << 20;

/// The rates kept for the store `store` (its base path) in `state_dir`; zeros when none.
StoreRates load_store_rates(const std::string& state_dir, const std::string& store);

/// Folds new measurements (0: none) into the kept rates of `store` (a moving average, so
/// one odd run does not decide the next plan) and writes the file atomically.
Result<void> record_store_rates(const std::string& state_dir, const std::string& store,
                                double single_bps, double aggregate_bps);

/// The allocated bytes of the regular files under `dirfd` (sparse files count what they
/// hold), walked without following links; stops after `budget` entries (decremented).
uint64_t allocated_tree_bytes(int dirfd, std::size_t& budget);

/// The predicted checkpoint size of a container whose init is `pid`: the anonymous and
/// shared memory of its memory cgroup (cgroup v1 or v2, from /proc/<pid>/cgroup) plus the
/// bytes of its writable layer `upperdir` (walked without following links, at most
/// kMaxPlanWalkEntries entries: beyond that the count so far). 0 parts when unreadable.
inline constexpr std::size_t kMaxPlanWalkEntries = 200'000;
uint64_t predict_checkpoint_bytes(int pid, const std::string& upperdir);

struct PlanOptions {
  double seconds_left = 0;       ///< Until the deadline.
  int parallel = 2;              ///< Dumps at once when the CPU is the bottleneck.
  double per_container_s = 0.5;  ///< Fixed cost of one dump (runc, CRIU start, commit).
  double margin_s = -1;          ///< Kept free before the deadline; <0: max(1 s, 5%).
};

/// One container's place in the plan.
struct PlanEntry {
  bool admitted = true;
  double predicted_finish_s = 0;  ///< From the plan's start (0 when not predicted).
  std::string reason;             ///< Why it is not attempted (empty when admitted).
};

struct DeadlinePlan {
  std::vector<std::size_t> order;  ///< Admitted containers, in the order to dump them.
  std::vector<PlanEntry> entries;  ///< One per container, in the given order.
  int workers = 1;                 ///< Dumps at once.
  bool predicted = false;          ///< Whether a measured rate was used.
  std::string basis;               ///< One line: the rate and mode the plan assumed.
};

/// Slots the knapsack cuts the time budget into.
inline constexpr int kKnapsackSlots = 2000;

/// Plans dumps of containers of `bytes` each into a store with `rates`. Without a measured
/// rate every container is admitted (smallest first, `parallel` at once). Otherwise: when
/// everything fits at the sequential rate, all at `parallel`; when not, the faster measured
/// mode (one at a time at `single`, or `parallel` at `aggregate`), and containers admitted
/// smallest first while their predicted finish stays before the deadline less the margin.
/// `priorities` (empty: all 1, or one per container, each >= 1): with unequal priorities the
/// admitted set maximises their total (the knapsack above) instead of the count.
DeadlinePlan plan_dumps(const std::vector<uint64_t>& bytes, const StoreRates& rates,
                        const PlanOptions& options, const std::vector<int64_t>& priorities = {});

/// The indices of `seconds` (each container's time) that maximise the total of `values`
/// within `budget` seconds (see the knapsack above), in the given order. Exposed for tests.
std::vector<std::size_t> choose_by_priority(const std::vector<double>& seconds,
                                            const std::vector<int64_t>& values, double budget);

/// A container's ARCH_PRIORITY under the node's cap: 1 when the cap is 0 (priorities off),
/// the value is empty, not a whole number or below 1; else min(value, cap).
int64_t effective_priority(std::string_view env_value, int priority_max);

/// A dump has begun writing its images once this much reached the store (less is the
/// file system's own metadata or the rootfs diff's first blocks).
inline constexpr uint64_t kProgressStartBytes = uint64_t{1} << 20;

/// One observation of a running dump: seconds since it started and bytes written so far.
struct DumpSample {
  double t = 0;
  uint64_t bytes = 0;
};

/// The projected finish of a dump (seconds since it started) from its samples (oldest
/// first) and its predicted size: the bytes left at the rate of the last `window_s`
/// seconds, counted from its first kProgressStartBytes. Infinity when it made no progress over the
/// window; 0 when it has not begun writing or wrote for less than half a second (too early).
double projected_dump_finish(const std::vector<DumpSample>& samples, uint64_t predicted_bytes,
                             double window_s = 2.0);

}  // namespace arch
