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
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
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

/// Plans dumps of containers of `bytes` each into a store with `rates`. Without a measured
/// rate every container is admitted (smallest first, `parallel` at once). Otherwise: when
/// everything fits at the sequential rate, all at `parallel`; when not, the faster measured
/// mode (one at a time at `single`, or `parallel` at `aggregate`), and containers admitted
/// smallest first while their predicted finish stays before the deadline less the margin.
DeadlinePlan plan_dumps(const std::vector<uint64_t>& bytes, const StoreRates& rates,
                        const PlanOptions& options);

}  // namespace arch
