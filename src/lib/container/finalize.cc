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
// cancelled) is thawed and skipped; a dump already started runs to its end (stopping CRIU
// midway would waste it). Lock waits are bounded by the time left.
// With options.checkpoint set (tests), each container goes through that function instead.
#include "container/finalize.h"

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
#include "criu/criu_features.h"
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

// The bytes a committed checkpoint holds, from its manifest (0 when unreadable).
uint64_t committed_bytes(const std::string& dir) {
  auto text = read_file(dir + "/" + kManifestFileName);
  auto manifest = text ? parse_manifest(*text) : Result<Manifest>(std::unexpected(text.error()));
  uint64_t total = 0;
  if (manifest) {
    for (const auto& f : manifest->files) total += f.size;
  }
  return total;
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

constexpr EnumNames<FinalizeOutcome, 3> kOutcomes{
    {{{FinalizeOutcome::kCheckpointed, "checkpointed"},
      {FinalizeOutcome::kFailed, "failed"},
      {FinalizeOutcome::kSkipped, "skipped"}}}};
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
  r.bytes = committed_bytes(out.path);
  r.detail = std::move(out.path);
  r.timings_ms = std::move(out.timings_ms);
  r.notes = std::move(out.notes);
  r.pre_copy = std::move(out.pre_copy);
}

// The phased pipeline (see the top of this file) over report.containers.
void finalize_phased(FinalizeReport& report, const std::vector<const RuncState*>& states,
                     const NodeConfig& config, const std::string& runc,
                     const FinalizeOptions& options, Clock::time_point deadline) {
  std::size_t n = report.containers.size();
  int workers = report.parallel;
  std::mutex mutex;
  auto done = [&](std::size_t i) {
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
    auto secs = std::chrono::duration_cast<std::chrono::seconds>(deadline - Clock::now());
    CheckpointOptions mine = copts;
    mine.lock_timeout_s = static_cast<int>(std::clamp<long>(secs.count(), 1, 60));
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

  std::optional<ThawGuard> guard;
  if (options.freeze_first) {
    std::vector<std::vector<std::string>> resumes;
    for (auto& c : ckpts) {
      if (c) resumes.push_back(c->resume_argv());
    }
    if (auto g = ThawGuard::arm(resumes)) guard.emplace(std::move(*g));
    phase("freeze", [&](std::size_t i) {
      if (!ckpts[i]) return;
      auto t0 = Clock::now();
      // Without the batch guard (it could not start), each container arms its own.
      auto frozen = ckpts[i]->freeze(!guard.has_value());
      spent[i] += seconds_since(t0);
      if (!frozen) failed(i, frozen.error());
    });
  }

  phase("dump", [&](std::size_t i) {
    if (!ckpts[i]) return;
    if (auto why = not_startable(deadline, options.cancel, "its dump could start"); !why.empty()) {
      return skip(i, why);
    }
    auto t0 = Clock::now();
    auto out = ckpts[i]->finish();
    auto& r = report.containers[i];
    r.seconds = spent[i] + seconds_since(t0);
    if (!out) return failed(i, out.error());
    fill_from_outcome(r, std::move(*out));
    ckpts[i].reset();
    done(i);
  });
  if (guard) guard->disarm();
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
    finalize_phased(report, known, config, runc, resolved, deadline);
  }
  report.total_seconds = seconds_since(start);
  return report;
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
  auto report =
      finalize_impl(std::move(containers), std::move(states), config, runc, options, start);
  report.phase_seconds["list"] = listed;
  return report;
}

nlohmann::json finalize_report_json(const FinalizeReport& report) {
  nlohmann::json out = {{"total_seconds", report.total_seconds},
                        {"parallel", report.parallel},
                        {"phase_seconds", report.phase_seconds},
                        {"containers", nlohmann::json::array()}};
  for (const auto& r : report.containers) {
    out["containers"].push_back({{"namespace", r.container.ns},
                                 {"id", r.container.id},
                                 {"result", to_string(r.outcome)},
                                 {"seconds", r.seconds},
                                 {"detail", r.detail},
                                 {"pre_copy", r.pre_copy},
                                 {"notes", r.notes},
                                 {"timings_ms", r.timings_ms}});
  }
  return out;
}

}  // namespace arch
