// Finalize: checkpoint every running ARCH-enabled container of the node before a deadline.
//
// Order of work (each phase a pool of `parallel` threads; see bench/finalize_scale.py):
//   list    one `runc list` per runc root gives every container's state (not one
//           `runc state` per container);
//   lock    each key locked and checked (a failure here fails that container alone);
//   pre-copy  CRIU pre-dump of each running container, when chosen (PreCopyMode);
//   freeze  one ThawGuard for all, then every container paused: a consistent cut across
//           the node, and busy workloads stop taking CPU and disk from the dumps;
//   dump    rootfs diff, CRIU dump, commit, end, per container. The writeback of each
//           checkpoint starts before its commit hashes it, so the disk works while the
//           other workers use the CPUs.
// A container whose dump has not started when the deadline passes (or finalize is
// cancelled) is thawed and skipped. With the plan, a dump whose projected finish passes the
// deadline less the margin is stopped up to its commit point: while CRIU dumps (CRIU ended)
// or while its images are written to the store before the commit (the flush, interrupted
// between chunks: container/staging_flush.h); either way the container is thawed and keeps
// running, the staging is removed and the older generations stay. Lock waits are bounded
// by the time left.
// With options.checkpoint set (tests), each container goes through that function instead.
#include "container/finalize.h"

#include <fmt/core.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "base/enum_names.h"
#include "base/file_util.h"
#include "container/deadline_plan.h"
#include "container/dump_progress.h"
#include "container/group_checkpoint.h"
#include "criu/criu_features.h"
#include "runtime/oci_spec.h"
#include "runtime/runc_client.h"
#include "store/manifest.h"

namespace arch {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Runs fn(0..n-1) on `workers` threads, each index once.
void run_pool(std::size_t n, int workers, const std::function<void(std::size_t)>& fn) {
  std::atomic<std::size_t> next{0};
  auto worker = [&] {
    for (std::size_t i; (i = next++) < n;) fn(i);
  };
  std::vector<std::jthread> pool;
  int count = std::max(1, std::min<int>(workers, static_cast<int>(n)));
  for (int i = 0; i < count; ++i) pool.emplace_back(worker);
}

// Why a container cannot start now, or empty.
std::string not_startable(Clock::time_point deadline, const std::atomic<bool>* cancel,
                          std::string_view what) {
  if (cancel != nullptr && cancel->load()) return "cancelled before " + std::string(what);
  if (Clock::now() >= deadline) return "deadline reached before " + std::string(what);
  return {};
}

// Runs one container's checkpoint into `r`, or marks it skipped.
void finalize_one(FinalizeResult& r, const CheckpointFn& checkpoint, Clock::time_point deadline,
                  const std::atomic<bool>* cancel) {
  auto t0 = Clock::now();
  if (auto why = not_startable(deadline, cancel, "it could start"); !why.empty()) {
    r.outcome = FinalizeOutcome::kSkipped;
    r.detail = why;
    return;
  }
  auto out = checkpoint(r.container);
  r.seconds = seconds_since(t0);
  if (out) {
    r.outcome = FinalizeOutcome::kCheckpointed;
    r.detail = out->path;
    r.bytes = out->bytes;
    r.timings_ms = out->timings_ms;
    r.notes = out->notes;
    r.pre_copy = out->pre_copy;
  } else {
    r.outcome = FinalizeOutcome::kFailed;
    r.detail = out.error().message();
  }
}

// Every container holds a few fds (lock, key directory, staging) from its lock to its
// commit: make sure a few hundred fit.
void raise_fd_limit(std::size_t containers) {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  rlim_t want = static_cast<rlim_t>(containers) * 6 + 256;
  if (rl.rlim_cur >= want) return;
  rl.rlim_cur = std::min(want, rl.rlim_max);
  (void)::setrlimit(RLIMIT_NOFILE, &rl);
}

}  // namespace

constexpr EnumNames<FinalizeOutcome, 4> kOutcomes{
    {{{FinalizeOutcome::kCheckpointed, "checkpointed"},
      {FinalizeOutcome::kFailed, "failed"},
      {FinalizeOutcome::kSkipped, "skipped"},
      {FinalizeOutcome::kStopped, "stopped"}}}};
constexpr EnumNames<PreCopyMode, 3> kPreCopyModes{
    {{{PreCopyMode::kOff, "off"}, {PreCopyMode::kOn, "on"}, {PreCopyMode::kAuto, "auto"}}}};

std::string_view to_string(FinalizeOutcome outcome) {
  return kOutcomes.name(outcome, "unknown");
}

std::size_t FinalizeReport::not_checkpointed() const {
  return static_cast<std::size_t>(
      std::count_if(containers.begin(), containers.end(),
                    [](const auto& r) { return r.outcome != FinalizeOutcome::kCheckpointed; }));
}

Result<PreCopyMode> parse_pre_copy_mode(std::string_view text) {
  if (auto mode = kPreCopyModes.parse(text)) return *mode;
  return fail(ErrorKind::kInvalidInput,
              "pre-copy mode must be off, on or auto, not \"" + std::string(text) + "\"");
}

int default_finalize_parallel() {
  // A dump is mostly CPU (runc and CRIU start-up, parasite injection, the tmpfs tars CRIU
  // runs, hashing), but one dump stream alone keeps a CPU busy only 35-70% of its wall time
  // (it waits on its children and on fsync): two workers per CPU keep the CPUs busy.
  // Measured on 2 CPUs (bench/RESULTS.md, "Finalize at scale"): 100 idle containers,
  // interleaved, 2 workers 16.4 s and 9.8 s, 4 workers 12.8 s and 8.5 s, same CPU time.
  unsigned cpus = std::max(1u, std::thread::hardware_concurrency());
  return static_cast<int>(std::clamp(2 * cpus, 2u, 32u));
}

namespace {

// The registered containers that run, with the state runc gave for each: one `runc list`
// per runc root (a `runc state` per container only when list fails).
std::vector<std::pair<ContainerRecord, RuncState>> running_with_state(const NodeConfig& config,
                                                                      const std::string& runc) {
  std::vector<std::pair<ContainerRecord, RuncState>> out;
  std::map<std::string, std::map<std::string, RuncState>> by_root;
  for (auto& rec : ContainerRegistry(config.state_dir).all()) {
    auto root = by_root.find(rec.runc_root);
    if (root == by_root.end()) {
      root = by_root.emplace(rec.runc_root, std::map<std::string, RuncState>{}).first;
      if (auto listed = RuncClient(runc, rec.runc_root).list()) {
        for (auto& st : *listed) root->second.emplace(st.id, std::move(st));
      }
    }
    std::optional<RuncState> st;
    if (auto it = root->second.find(rec.id); it != root->second.end()) {
      st = it->second;
    } else if (auto asked = RuncClient(runc, rec.runc_root).state(rec.id)) {
      st = std::move(*asked);
    }
    if (st && st->status == "running") out.emplace_back(std::move(rec), std::move(*st));
  }
  return out;
}

// Whether to ask each checkpoint for pre-copy. kOn asks even without soft-dirty tracking:
// each checkpoint then falls back to a plain dump and notes why.
bool choose_pre_copy(PreCopyMode mode, const NodeConfig& config, double seconds_left) {
  if (mode == PreCopyMode::kOff) return false;
  if (mode == PreCopyMode::kOn) return true;  // without soft-dirty: a note per container
  return seconds_left >= kPreCopyMinDeadlineSeconds && criu_dirty_tracking(config.criu).supported;
}

void fill_from_outcome(FinalizeResult& r, CheckpointOutcome&& out) {
  r.outcome = FinalizeOutcome::kCheckpointed;
  r.bytes = out.bytes;
  r.detail = std::move(out.path);
  r.timings_ms = std::move(out.timings_ms);
  r.notes = std::move(out.notes);
  r.pre_copy = std::move(out.pre_copy);
}

// Bytes per second a stopped dump wrote, from its first byte to its last sample; 0 when
// it wrote too little or too briefly to be a measurement.
double written_rate(const std::vector<DumpSample>& samples) {
  auto first = std::find_if(samples.begin(), samples.end(),
                            [](auto& s) { return s.bytes >= kProgressStartBytes; });
  if (first == samples.end() || first == samples.begin()) return 0;
  const auto& from = *std::prev(first);
  const auto& last = samples.back();
  double dt = last.t - from.t;
  if (dt < 0.5 || last.bytes < (uint64_t{4} << 20)) return 0;
  return static_cast<double>(last.bytes - from.bytes) / dt;
}

// One store's dumps: its queue (admitted, in order), its pool size, its members.
struct Group {
  std::string store;
  std::vector<std::size_t> queue;
  int workers = 1;
  double seconds = 0;
  std::vector<std::size_t> members;
};

// The phased pipeline (see the top of this file) over report.containers.
void finalize_phased(FinalizeReport& report, const std::vector<const RuncState*>& states,
                     const NodeConfig& config, const std::string& runc,
                     const FinalizeOptions& options, Clock::time_point start,
                     Clock::time_point deadline) {
  std::size_t n = report.containers.size();
  int workers = report.parallel;
  std::mutex mutex;
  auto done = [&](std::size_t i) {
    report.containers[i].finished_s = seconds_since(start);
    if (!options.on_result) return;
    std::lock_guard lock(mutex);
    options.on_result(report.containers[i]);
  };
  auto phase = [&](const char* name, auto fn) {
    auto t0 = Clock::now();
    run_pool(n, workers, fn);
    report.phase_seconds[name] = seconds_since(t0);
  };
  double left = std::chrono::duration<double>(deadline - Clock::now()).count();
  CheckpointOptions copts;
  copts.pre_copy = choose_pre_copy(options.pre_copy.value_or(PreCopyMode::kOff), config, left);
  copts.record_rate = false;  // recorded below, per store, from the whole dump phase
  std::vector<std::optional<ContainerCheckpoint>> ckpts(n);
  std::vector<double> spent(n, 0);

  auto skip = [&](std::size_t i, std::string why) {
    auto& r = report.containers[i];
    r.outcome = FinalizeOutcome::kSkipped;
    r.detail = std::move(why);
    ckpts[i].reset();  // thaws it if it was frozen
    done(i);
  };
  auto failed = [&](std::size_t i, const Error& e) {
    auto& r = report.containers[i];
    r.outcome = FinalizeOutcome::kFailed;
    r.detail = e.message();
    ckpts[i].reset();
    done(i);
  };

  phase("lock", [&](std::size_t i) {
    auto t0 = Clock::now();
    if (auto why = not_startable(deadline, options.cancel, "it could start"); !why.empty()) {
      return skip(i, why);
    }
    CheckpointOptions mine = copts;
    mine.lock_timeout_s = lock_timeout_before(deadline);
    auto c =
        ContainerCheckpoint::begin(report.containers[i].container, config, runc, mine, states[i]);
    spent[i] += seconds_since(t0);
    if (!c) return failed(i, c.error());
    ckpts[i].emplace(std::move(*c));
  });
  if (copts.pre_copy) {
    phase("pre_copy", [&](std::size_t i) {
      if (!ckpts[i]) return;
      auto t0 = Clock::now();
      ckpts[i]->pre_copy();
      spent[i] += seconds_since(t0);
    });
  }

  // The plan, per store: which containers are attempted (the rest are never frozen and
  // keep running, held until the dump phase ends in case a re-plan admits them), smallest
  // first, and how many at once (deadline_plan.h).
  std::vector<uint64_t> predicted(n, 0);
  std::vector<int64_t> priority(n, 1);
  std::vector<std::string> deferred(n);  // why it is not attempted (for now); "" otherwise
  std::vector<Group> groups;
  double margin = 1;
  auto plan_group = [&](const std::string& store, const std::vector<std::size_t>& members,
                        double seconds_left) {
    std::vector<uint64_t> bytes;
    std::vector<int64_t> prio;
    for (auto i : members) {
      bytes.push_back(predicted[i]);
      prio.push_back(priority[i]);
    }
    DeadlinePlan plan;
    if (options.plan) {
      plan = plan_dumps(bytes, load_store_rates(config.state_dir, store),
                        PlanOptions{.seconds_left = seconds_left, .parallel = workers}, prio);
    } else {  // every container, in the given order, the whole pool
      plan.entries.resize(members.size());
      for (std::size_t k = 0; k < members.size(); ++k) plan.order.push_back(k);
      plan.workers = workers;
      plan.basis = "no plan (--plan off): every container attempted";
    }
    return plan;
  };
  {
    auto t0 = Clock::now();
    run_pool(n, workers, [&](std::size_t i) {
      if (!ckpts[i]) return;
      predicted[i] = ckpts[i]->predicted_bytes();
      if (config.checkpoint.priority_max > 0) {
        if (auto env = read_arch_env(report.containers[i].container.bundle)) {
          priority[i] =
              effective_priority(env->get("ARCH_PRIORITY"), config.checkpoint.priority_max);
        }
      }
    });
    std::map<std::string, std::vector<std::size_t>> by_store;
    for (std::size_t i = 0; i < n; ++i) {
      if (ckpts[i]) by_store[report.containers[i].container.store].push_back(i);
    }
    double seconds_left = std::chrono::duration<double>(deadline - Clock::now()).count();
    margin = std::max(1.0, 0.05 * seconds_left);
    for (auto& [store, members] : by_store) {
      auto plan = plan_group(store, members, seconds_left);
      report.plans[store] = plan.basis;
      Group g{store, {}, plan.workers, 0, members};
      for (std::size_t k = 0; k < members.size(); ++k) {
        auto& r = report.containers[members[k]];
        r.predicted_bytes = predicted[members[k]];
        r.predicted_finish_s = plan.entries[k].predicted_finish_s;
        if (!plan.entries[k].admitted) deferred[members[k]] = plan.entries[k].reason;
      }
      for (auto k : plan.order) g.queue.push_back(members[k]);
      groups.push_back(std::move(g));
    }
    report.phase_seconds["plan"] = seconds_since(t0);
  }

  std::optional<ThawGuard> guard;
  if (options.freeze_first) {
    std::vector<std::vector<std::string>> resumes;
    for (auto& c : ckpts) {
      if (c) resumes.push_back(c->resume_argv());
    }
    if (auto g = ThawGuard::arm(resumes)) guard.emplace(std::move(*g));
    phase("freeze", [&](std::size_t i) {
      if (!ckpts[i] || !deferred[i].empty()) return;
      auto t0 = Clock::now();
      // Without the batch guard (it could not start), each container arms its own.
      auto frozen = ckpts[i]->freeze(!guard.has_value());
      spent[i] += seconds_since(t0);
      if (!frozen) failed(i, frozen.error());
    });
  }

  // The dumps under way that the watcher follows: a dump whose projected finish (from its
  // progress) passes the deadline less the margin is stopped (ContainerCheckpoint::stop()).
  struct Running {
    std::size_t group = 0;
    Clock::time_point t0;
    std::optional<DumpProgress> progress;
    std::vector<DumpSample> samples;
    int late = 0;
    bool stopping = false;
    uint64_t progressed = 0;
  };
  std::mutex run_mutex;  // guards `running` and every group's queue
  std::map<std::size_t, Running> running;
  std::vector<double> dump_secs(n, 0);
  auto budget_end =
      deadline - std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(margin));

  // After a stop: the time left may admit others (a smaller one, or one deferred).
  auto replan = [&](std::size_t gi) {
    auto& g = groups[gi];
    std::vector<std::size_t> candidates;
    std::vector<bool> was_queued;
    for (auto i : g.queue) candidates.push_back(i), was_queued.push_back(true);
    for (auto i : g.members) {
      if (ckpts[i] && !deferred[i].empty()) candidates.push_back(i), was_queued.push_back(false);
    }
    double time_left = std::chrono::duration<double>(deadline - Clock::now()).count();
    auto plan = plan_dumps(
        [&] {
          std::vector<uint64_t> b;
          for (auto i : candidates) b.push_back(predicted[i]);
          return b;
        }(),
        load_store_rates(config.state_dir, g.store),
        PlanOptions{.seconds_left = time_left, .parallel = 1, .margin_s = margin},
        [&] {
          std::vector<int64_t> p;
          for (auto i : candidates) p.push_back(priority[i]);
          return p;
        }());
    g.queue.clear();
    for (auto k : plan.order) {
      g.queue.push_back(candidates[k]);
      deferred[candidates[k]].clear();
    }
    std::vector<std::size_t> dropped;
    for (std::size_t k = 0; k < candidates.size(); ++k) {
      if (plan.entries[k].admitted) continue;
      deferred[candidates[k]] = "after a stopped dump, re-planned: " + plan.entries[k].reason;
      if (was_queued[k]) dropped.push_back(candidates[k]);
    }
    report.plans[g.store] += "; re-planned after a stopped dump: " + plan.basis;
    return dropped;
  };

  auto dump_one = [&](std::size_t gi, std::size_t i) {
    if (!ckpts[i]) return;
    if (auto why = not_startable(deadline, options.cancel, "its dump could start"); !why.empty()) {
      return skip(i, why);
    }
    auto t0 = Clock::now();
    {
      std::lock_guard lock(run_mutex);
      Running run;
      run.group = gi;
      run.t0 = t0;
      running[i] = std::move(run);
    }
    auto out = ckpts[i]->finish();
    Running mine;
    {
      std::lock_guard lock(run_mutex);
      mine = std::move(running[i]);
      running.erase(i);
    }
    dump_secs[i] = seconds_since(t0);
    auto& r = report.containers[i];
    r.seconds = spent[i] + dump_secs[i];
    if (!out && ckpts[i]->stopped()) {
      r.outcome = FinalizeOutcome::kStopped;
      r.detail = out.error().message();
      // What the store took while it ran is a measurement of the store all the same.
      // Its write rate from its first byte on (runc's and CRIU's start-up left out).
      if (double bps = written_rate(mine.samples); bps > 0) {
        (void)record_store_rates(config.state_dir, groups[gi].store, bps, 0);
      }
      ckpts[i].reset();
      done(i);
      std::vector<std::size_t> dropped;
      {
        std::lock_guard lock(run_mutex);
        dropped = replan(gi);
      }
      for (auto k : dropped) skip(k, deferred[k]);
      return;
    }
    if (!out) return failed(i, out.error());
    fill_from_outcome(r, std::move(*out));
    ckpts[i].reset();
    done(i);
  };

  std::atomic<bool> dumps_over{false};
  std::jthread watcher;
  if (options.plan && options.stop_late_dumps) {
    watcher = std::jthread([&] {
      while (!dumps_over.load()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        std::lock_guard lock(run_mutex);
        auto now = Clock::now();
        for (auto& [i, run] : running) {
          if (run.stopping || groups[run.group].workers != 1 || !ckpts[i]) continue;
          if (!run.progress) {
            auto dir = ckpts[i]->staging_path();
            if (dir.empty()) continue;
            run.progress.emplace(dir);
          }
          run.progressed = run.progress->bytes(ckpts[i]->written_back_bytes());
          run.samples.push_back(
              {std::chrono::duration<double>(now - run.t0).count(), run.progressed});
          double finish = projected_dump_finish(run.samples, predicted[i]);
          // Nothing to project from yet: late only once the time is up.
          if (finish <= 0 && now < budget_end) continue;
          auto at = finish <= 0
                        ? now
                        : run.t0 + std::chrono::duration_cast<Clock::duration>(
                                       std::chrono::duration<double>(std::min(finish, 1e6)));
          // Late for a second on end; once the deadline less the margin has come, at once
          // (waiting longer would eat the margin kept for the stop itself).
          bool time_up = now >= budget_end;
          run.late = at > budget_end || time_up ? run.late + 1 : 0;
          if (run.late < 0 || (run.late < 5 && !time_up)) continue;  // < 0: refused
          auto why = fmt::format(
              "its dump could not finish in time: {:.0f} of {:.0f} MiB written after {:.1f} s, "
              "projected to finish at {:.1f} s, after the deadline less the margin ({:.1f} s); "
              "the container keeps running",
              static_cast<double>(run.progressed) / (1 << 20),
              static_cast<double>(predicted[i]) / (1 << 20), run.samples.back().t,
              std::chrono::duration<double>(at - start).count(),
              std::chrono::duration<double>(budget_end - start).count());
          run.stopping = ckpts[i]->stop(why);
          if (!run.stopping) run.late = -1000000;  // cannot be undone: let it run
        }
      }
    });
  }

  auto dump_start = Clock::now();
  run_pool(groups.size(), static_cast<int>(groups.size()), [&](std::size_t gi) {
    auto t0 = Clock::now();
    auto next = [&]() -> std::optional<std::size_t> {
      std::lock_guard lock(run_mutex);
      if (groups[gi].queue.empty()) return std::nullopt;
      auto i = groups[gi].queue.front();
      groups[gi].queue.erase(groups[gi].queue.begin());
      return i;
    };
    run_pool(static_cast<std::size_t>(groups[gi].workers), groups[gi].workers, [&](std::size_t) {
      while (auto i = next()) dump_one(gi, *i);
    });
    groups[gi].seconds = seconds_since(t0);
  });
  dumps_over = true;
  if (watcher.joinable()) watcher.join();
  report.phase_seconds["dump"] = seconds_since(dump_start);
  // Containers the plan did not attempt: released, running (never frozen).
  for (std::size_t i = 0; i < n; ++i) {
    if (ckpts[i] && !deferred[i].empty()) skip(i, deferred[i]);
  }
  if (guard) guard->disarm();
  // What the stores took, for the next plan: bytes committed per second of dump, as one
  // stream (one at a time: the dumps' own seconds) or side by side (the phase's).
  for (const auto& g : groups) {
    uint64_t bytes = 0;
    int saved = 0;
    double secs = 0;
    for (auto i : g.members) {
      if (report.containers[i].outcome != FinalizeOutcome::kCheckpointed) continue;
      bytes += report.containers[i].bytes;
      secs += dump_secs[i];
      ++saved;
    }
    bool side_by_side = g.workers > 1 && saved > 1;
    if (side_by_side) secs = g.seconds;
    if (saved == 0 || secs <= 0 || bytes < kMinRateSampleBytes) continue;
    double bps = static_cast<double>(bytes) / secs;
    (void)record_store_rates(config.state_dir, g.store, side_by_side ? 0 : bps,
                             side_by_side ? bps : 0);
  }
}

FinalizeReport finalize_impl(std::vector<ContainerRecord> containers,
                             std::vector<std::optional<RuncState>> states, const NodeConfig& config,
                             const std::string& runc, const FinalizeOptions& options,
                             Clock::time_point start) {
  auto deadline = start + std::chrono::duration_cast<Clock::duration>(
                              std::chrono::duration<double>(options.deadline_seconds));
  if (options.on_start) options.on_start(containers);
  FinalizeReport report;
  report.parallel = options.parallel > 0 ? options.parallel : default_finalize_parallel();
  for (auto& rec : containers) report.containers.push_back({std::move(rec)});
  if (options.checkpoint) {
    std::mutex mutex;
    run_pool(report.containers.size(), report.parallel, [&](std::size_t i) {
      finalize_one(report.containers[i], options.checkpoint, deadline, options.cancel);
      if (options.on_result) {
        std::lock_guard lock(mutex);
        options.on_result(report.containers[i]);
      }
    });
  } else {
    raise_fd_limit(report.containers.size());
    FinalizeOptions resolved = options;
    if (!resolved.pre_copy) {
      auto mode = parse_pre_copy_mode(config.checkpoint.pre_copy);
      resolved.pre_copy = mode ? *mode : PreCopyMode::kOff;
    }
    std::vector<const RuncState*> known;
    states.resize(report.containers.size());
    for (auto& st : states) known.push_back(st ? &*st : nullptr);
    finalize_phased(report, known, config, runc, resolved, start, deadline);
  }
  report.total_seconds = seconds_since(start);
  return report;
}

// Groups (group_checkpoint.h): the members of each group are taken out of the pool and
// checkpointed as one unit, before the others, each group only while the deadline has not
// passed and finalize is not cancelled: all of a group's members are checkpointed, or none.
// (A group started just before the deadline is not interrupted.)
std::vector<FinalizeResult> finalize_groups(std::vector<ContainerRecord>& containers,
                                            std::vector<std::optional<RuncState>>& states,
                                            const NodeConfig& config, const std::string& runc,
                                            const FinalizeOptions& options,
                                            Clock::time_point start) {
  std::map<std::pair<std::string, std::string>, NodeGroup> groups;
  std::vector<ContainerRecord> rest;
  std::vector<std::optional<RuncState>> rest_states;
  auto names = effective_groups(containers, config);  // ARCH_GROUP, or the pod's group
  for (std::size_t i = 0; i < containers.size(); ++i) {
    const auto& name = names[i];
    if (name && !name->empty()) {
      auto& g = groups[{containers[i].owner, *name}];
      g.owner = containers[i].owner;
      g.name = *name;
      g.members.push_back(std::move(containers[i]));
      continue;
    }
    rest.push_back(std::move(containers[i]));
    rest_states.push_back(i < states.size() ? std::move(states[i]) : std::nullopt);
  }
  containers = std::move(rest);
  states = std::move(rest_states);
  std::vector<FinalizeResult> out;
  auto deadline = start + std::chrono::duration_cast<Clock::duration>(
                              std::chrono::duration<double>(options.deadline_seconds));
  for (auto& [_, g] : groups) {
    auto t = Clock::now();
    std::size_t first = out.size();
    bool cancelled = options.cancel != nullptr && options.cancel->load();
    if (t >= deadline || cancelled) {
      for (auto& m : g.members) {
        out.push_back({m, FinalizeOutcome::kSkipped,
                       "group " + g.name + " not started: " +
                           (cancelled ? "finalize cancelled" : "the deadline had passed")});
      }
    } else {
      // One unit within the deadline: admitted by the plan with the sum of its members'
      // sizes, stopped and thawed whole if it cannot finish; across nodes when asked.
      auto done =
          options.group_checkpoint
              ? options.group_checkpoint(g, deadline)
              : checkpoint_group(g, config, runc, {},
                                 drain_group_limits(config, g.members.front().store, deadline));
      for (auto& m : g.members) {
        FinalizeResult r{m};
        if (!done) {
          // Not admitted (or the deadline had passed): never frozen, still running.
          bool not_started = done.error().message().find(
                                 "not started, every member still "
                                 "running") != std::string::npos;
          r.outcome = not_started ? FinalizeOutcome::kSkipped : FinalizeOutcome::kFailed;
          r.detail = done.error().message();
        } else {
          for (auto& mo : done->members) {
            if (mo.container.id == m.id && mo.container.ns == m.ns) {
              fill_from_outcome(r, std::move(mo.outcome));
            }
          }
          r.notes.push_back(fmt::format("group {} generation {}: frozen {:.0f} ms", g.name,
                                        done->generation, done->frozen_ms));
          if (done->nodes.size() > 1) {
            std::string nodes;
            for (const auto& n : done->nodes) nodes += (nodes.empty() ? "" : ", ") + n;
            r.notes.push_back(fmt::format("group {} across nodes {}: {} member(s) there too",
                                          g.name, nodes, done->remote_members));
          }
        }
        out.push_back(std::move(r));
      }
    }
    for (std::size_t i = first; i < out.size(); ++i) {
      out[i].seconds = seconds_since(t);
      out[i].finished_s = seconds_since(start);
      if (options.on_result) options.on_result(out[i]);
    }
  }
  return out;
}

}  // namespace

std::vector<ContainerRecord> running_containers(const NodeConfig& config, const std::string& runc) {
  std::vector<ContainerRecord> out;
  for (auto& [rec, st] : running_with_state(config, runc)) out.push_back(std::move(rec));
  return out;
}

FinalizeReport finalize_containers(std::vector<ContainerRecord> containers,
                                   const NodeConfig& config, const std::string& runc,
                                   const FinalizeOptions& options, Clock::time_point start) {
  return finalize_impl(std::move(containers), {}, config, runc, options, start);
}

FinalizeReport finalize_node(const NodeConfig& config, const std::string& runc,
                             const FinalizeOptions& options) {
  auto start = Clock::now();
  std::vector<ContainerRecord> containers;
  std::vector<std::optional<RuncState>> states;
  for (auto& [rec, st] : running_with_state(config, runc)) {
    containers.push_back(std::move(rec));
    states.emplace_back(std::move(st));
  }
  double listed = seconds_since(start);
  std::vector<FinalizeResult> grouped;
  if (!options.checkpoint) {
    grouped = finalize_groups(containers, states, config, runc, options, start);
  }
  auto report =
      finalize_impl(std::move(containers), std::move(states), config, runc, options, start);
  report.phase_seconds["list"] = listed;
  for (auto& r : grouped) report.containers.push_back(std::move(r));
  return report;
}

nlohmann::json finalize_report_json(const FinalizeReport& report) {
  nlohmann::json out = {{"total_seconds", report.total_seconds},
                        {"parallel", report.parallel},
                        {"phase_seconds", report.phase_seconds},
                        {"plans", report.plans},
                        {"containers", nlohmann::json::array()}};
  for (const auto& r : report.containers) {
    out["containers"].push_back({{"namespace", r.container.ns},
                                 {"id", r.container.id},
                                 {"result", to_string(r.outcome)},
                                 {"seconds", r.seconds},
                                 {"detail", r.detail},
                                 {"pre_copy", r.pre_copy},
                                 {"notes", r.notes},
                                 {"timings_ms", r.timings_ms},
                                 {"bytes", r.bytes},
                                 {"predicted_bytes", r.predicted_bytes},
                                 {"predicted_finish_s", r.predicted_finish_s},
                                 {"finished_s", r.finished_s}});
  }
  return out;
}

}  // namespace arch
