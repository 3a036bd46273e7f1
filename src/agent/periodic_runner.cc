// PeriodicRunner: see periodic_runner.h.
#include "periodic_runner.h"

#include <fmt/core.h>

#include <algorithm>
#include <set>

#include "base/clock.h"
#include "container/finalize.h"
#include "container/group_checkpoint.h"
#include "container/periodic.h"
#include "managed/container_registry.h"
#include "runtime/oci_spec.h"
#include "runtime/runc_client.h"

namespace arch::agent {

PeriodicRunner::PeriodicRunner(const NodeConfig& config, std::string runc,
                               std::function<bool()> draining, Record record)
    : config_(config),
      runc_(std::move(runc)),
      draining_(std::move(draining)),
      record_(std::move(record)) {}

void PeriodicRunner::record_checkpoint(const std::string& ns, const std::string& id,
                                       const char* outcome, double ms, const std::string& detail,
                                       uint64_t bytes) {
  record_({.kind = "checkpoint",
           .ns = ns,
           .id = id,
           .outcome = outcome,
           .duration_ms = ms,
           .detail = detail.substr(0, detail.find('\n'))},
          bytes);
}

PeriodicRunner::~PeriodicRunner() {
  stop();
}

std::chrono::milliseconds PeriodicRunner::period() const {
  auto half =
      std::chrono::duration_cast<std::chrono::milliseconds>(config_.checkpoint.min_interval) / 2;
  return std::clamp(half, std::chrono::milliseconds(1000), std::chrono::milliseconds(10000));
}

void PeriodicRunner::start() {
  std::lock_guard lock(mutex_);
  if (thread_.joinable()) return;
  stopping_ = false;
  thread_ = std::thread([this] {
    std::unique_lock held(mutex_);
    while (!stopping_) {
      held.unlock();
      tick(Clock::now());
      held.lock();
      wake_.wait_for(held, period(), [this] { return stopping_; });
    }
  });
}

void PeriodicRunner::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void PeriodicRunner::tick(Clock::time_point now) {
  if (draining_ && draining_()) return;
  std::set<std::string> seen;
  // The registry first (a directory read): runc is asked only about a container that is
  // due, so a node without periodic checkpoints makes no runtime calls at all.
  auto records = ContainerRegistry(config_.state_dir).all();
  // Members of a group (ARCH_GROUP or their pod's) go only with their group, below.
  auto group_names = effective_groups(records, config_);
  std::map<std::pair<std::string, std::string>,
           std::pair<NodeGroup, std::vector<CheckpointInterval>>>
      groups;
  for (std::size_t i = 0; i < records.size(); ++i) {
    const auto& rec = records[i];
    {
      std::lock_guard lock(mutex_);
      if (stopping_) return;
    }
    std::string key = rec.runc_root + "/" + rec.id;
    seen.insert(key);
    auto env = read_arch_env(rec.bundle);
    auto interval = env ? checkpoint_interval(config_, env->get("ARCH_CHECKPOINT_INTERVAL"))
                        : Result<CheckpointInterval>(std::unexpected(env.error()));
    std::string note = interval ? interval->note : interval.error().message();
    if (!note.empty() && warned_[key] != note) {
      warned_[key] = note;
      record_({.kind = "checkpoint",
               .ns = rec.ns,
               .id = rec.id,
               .outcome = interval ? "periodic-interval" : "periodic-refused",
               .detail = note},
              0);
    }
    if (group_names[i] && !group_names[i]->empty()) {
      auto& [g, intervals] = groups[{rec.owner, *group_names[i]}];
      g.owner = rec.owner;
      g.name = *group_names[i];
      g.members.push_back(rec);
      if (interval) intervals.push_back(*interval);
      continue;
    }
    if (!interval || interval->every.count() == 0) continue;
    auto [it, first] = last_.try_emplace(key, now);
    if (first || now - it->second < interval->every) continue;  // first seen: one interval on
    auto state = RuncClient(runc_, rec.runc_root).state(rec.id);
    if (!state || state->status != "running") continue;  // created, paused or gone: not now
    if (draining_ && draining_()) return;
    auto t0 = Clock::now();
    auto done = periodic_checkpoint(rec, config_, runc_);
    it->second = Clock::now();
    double ms = ms_since(t0);
    if (done) {
      record_checkpoint(rec.ns, rec.id, "periodic", ms,
                        fmt::format("frozen {:.0f} ms, {:.1f} MiB, {}", done->frozen_ms,
                                    static_cast<double>(done->checkpoint.bytes) / (1 << 20),
                                    done->checkpoint.path),
                        done->checkpoint.bytes);
    } else {
      record_checkpoint(rec.ns, rec.id, "periodic-failed", ms, done.error().message(), 0);
    }
  }
  for (auto& [_, entry] : groups) {
    auto& [g, intervals] = entry;
    {
      std::lock_guard lock(mutex_);
      if (stopping_) return;
    }
    std::sort(g.members.begin(), g.members.end(),
              [](const auto& a, const auto& b) { return a.key < b.key; });
    std::string key = "group:" + g.owner + "/" + g.name;
    seen.insert(key);
    auto interval = group_checkpoint_interval(intervals);
    if (interval.every.count() == 0) continue;
    auto [it, first] = last_.try_emplace(key, now);
    if (first || now - it->second < interval.every) continue;  // first seen: one interval on
    // Every member running, else not now (a group is checkpointed whole or not at all).
    bool all_running = std::ranges::all_of(g.members, [&](const ContainerRecord& m) {
      auto state = RuncClient(runc_, m.runc_root).state(m.id);
      return state && state->status == "running";
    });
    if (!all_running) continue;
    if (draining_ && draining_()) return;
    auto t0 = Clock::now();
    auto done = periodic_group_checkpoint(g, config_, runc_);
    it->second = Clock::now();
    double ms = ms_since(t0);
    for (const auto& m : g.members) {
      if (!done) {
        record_checkpoint(m.ns, m.id, "periodic-failed", ms, done.error().message(), 0);
        continue;
      }
      for (const auto& mo : done->members) {
        if (mo.container.id != m.id || mo.container.runc_root != m.runc_root) continue;
        record_checkpoint(
            m.ns, m.id, "periodic", ms,
            fmt::format("group {} generation {}: frozen {:.0f} ms, {:.1f} MiB, {}", g.name,
                        done->generation, done->frozen_ms,
                        static_cast<double>(mo.outcome.bytes) / (1 << 20), mo.outcome.path),
            mo.outcome.bytes);
      }
    }
  }
  // Group restores' arrival markers once stale (bounded; group_checkpoint.h).
  (void)sweep_group_markers(config_, std::chrono::seconds(config_.restore_group_wait_seconds + 60));
  // Forget containers that no longer run (a container run again starts a new interval).
  std::erase_if(last_, [&](const auto& kv) { return !seen.contains(kv.first); });
  std::erase_if(warned_, [&](const auto& kv) { return !seen.contains(kv.first); });
}

}  // namespace arch::agent
