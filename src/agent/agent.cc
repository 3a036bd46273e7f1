// Agent: drains, notices, the draining flag, the scan for restores and quarantined
// checkpoints, and the persistence of it all.
//
// Locking: mutex_ guards the state; it is never held across a runc call, a checkpoint or
// a directory scan. The drain worker takes it only to record each container's result.
#include "agent.h"

#include <fmt/core.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <ctime>
#include <map>
#include <set>

#include "base/clock.h"
#include "base/duration.h"
#include "base/file_util.h"
#include "base/host.h"
#include "container/restore_barrier.h"
#include "criu/criu_report.h"
#include "managed/container_registry.h"
#include "peer/group_peers.h"
#include "private_dir.h"
#include "runtime/runc_client.h"
#include "store/checkpoint_store.h"
#include "version.h"

namespace arch::agent {
namespace {

using nlohmann::json;
using SysClock = std::chrono::system_clock;

constexpr std::size_t kStatusEvents = 50;
constexpr auto kHousekeepingInterval = std::chrono::seconds(5);
constexpr auto kHoldSweepInterval = std::chrono::minutes(1);

std::string_view notice_kind(Notice::Kind kind) {
  return kind == Notice::Kind::kSpot ? "spot" : "rebalance";
}

json notice_json(const std::optional<NoticeRecord>& n) {
  if (!n) return nullptr;
  return {{"kind", n->kind}, {"action", n->action}, {"time", n->time_text}, {"seen", n->seen}};
}

// The event log's outcome of a checkpoint: "ok", else finalize's own name ("failed", ...).
std::string_view checkpoint_outcome(FinalizeOutcome o) {
  return o == FinalizeOutcome::kCheckpointed ? "ok" : to_string(o);
}

// True when the engine's runc log of a restored container says arch-runc restored it.

}  // namespace

double notice_deadline_seconds(const Notice& notice, SysClock::time_point now,
                               int safety_margin_seconds) {
  double fallback = std::max(5.0, 120.0 - safety_margin_seconds);
  if (notice.kind == Notice::Kind::kRebalance || notice.time == SysClock::time_point{}) {
    return fallback;
  }
  double left = std::chrono::duration<double>(notice.time - now).count() - safety_margin_seconds;
  return std::clamp(std::floor(left), 5.0, 300.0);
}

Agent::Agent(NodeConfig config, std::string runc, Logger log)
    : config_(std::move(config)),
      runc_(std::move(runc)),
      log_(std::move(log)),
      events_(config_.agent.event_log) {
  watcher_.state = config_.agent.imds_endpoint.empty() ? "disabled" : "not running";
}

Agent::~Agent() {
  stop();
}

Result<void> Agent::start() {
  started_ = now_seconds();
  auto loaded = load_node_state(config_.agent.state_file);
  if (!loaded) return std::unexpected(loaded.error().wrap("load state"));
  if (auto opened = events_.open(); !opened) {
    log_(LogLevel::kWarn, "event log: " + opened.error().message() + " (events kept in memory)");
  }
  std::lock_guard lock(mutex_);
  state_ = std::move(*loaded);
  stopping_ = false;
  if (state_.draining) {
    if (auto flagged = write_flag_locked(); !flagged) return flagged;
    log_(LogLevel::kInfo, fmt::format("draining since {} ({}: {})", state_.draining_since,
                                      to_string(state_.drain_kind), state_.drain_reason));
  } else if (::access(draining_flag(config_).c_str(), F_OK) == 0) {
    log_(LogLevel::kWarn,
         draining_flag(config_) + " exists but archd's state says not draining: left as it is");
  }
  event({.kind = "agent",
         .outcome = "started",
         .detail = fmt::format("archd {} pid {}{}", kVersion, ::getpid(),
                               state_.draining ? ", draining" : "")});
  resume_interrupted_locked();
  save_locked();
  housekeeping_ = std::thread([this] { housekeeping_loop(); });
  periodic_ = std::make_unique<PeriodicRunner>(
      config_, runc_,
      [this] {
        std::lock_guard held(mutex_);
        return state_.draining || stopping_;
      },
      [this](Event e, uint64_t bytes) { record_periodic(std::move(e), bytes); });
  periodic_->start();
  return {};
}

void Agent::stop() {
  {
    std::lock_guard lock(mutex_);
    if (stopping_ && !drain_thread_.joinable() && !housekeeping_.joinable()) return;
    stopping_ = true;
    cancel_drain_ = true;
  }
  wake_.notify_all();
  if (periodic_) periodic_->stop();
  if (housekeeping_.joinable()) housekeeping_.join();
  if (drain_thread_.joinable()) drain_thread_.join();
  std::lock_guard lock(mutex_);
  if (started_ != 0) {
    event({.kind = "agent", .outcome = "stopped", .detail = fmt::format("pid {}", ::getpid())});
    save_locked();
    started_ = 0;
  }
}

// ---------------------------------------------------------------- drains

Result<DrainRecord> Agent::drain(DrainRequest request) {
  if (!(request.deadline_seconds >= 1 && request.deadline_seconds <= 3600)) {
    return fail(ErrorKind::kInvalidInput, "deadline_seconds must be from 1 to 3600");
  }
  if (request.reason.size() > 1024) {
    return fail(ErrorKind::kInvalidInput, "reason is longer than 1024 bytes");
  }
  std::lock_guard lock(mutex_);
  if (stopping_) return fail(ErrorKind::kUnavailable, "archd is stopping");
  if (drain_running_) {
    return fail(ErrorKind::kConflict,
                fmt::format("drain {} is still running", state_.drains.back().id));
  }
  if (request.kind == DrainKind::kManual) ++state_.counters.notices["manual"];
  auto d = start_drain_locked(std::move(request), 0);
  save_locked();
  return d;
}

Result<DrainRecord> Agent::start_drain_locked(DrainRequest request, int64_t resumed_from) {
  if (request.reason.empty()) request.reason = std::string(to_string(request.kind)) + " drain";
  if (!state_.draining) {
    state_.draining = true;
    state_.draining_since = now_seconds();
  }
  state_.drain_kind = request.kind;
  state_.drain_reason = request.reason;
  if (auto flagged = write_flag_locked(); !flagged) {
    log_(LogLevel::kError, "draining flag: " + flagged.error().message());
  }
  DrainRecord d;
  d.id = state_.next_drain_id++;
  d.kind = request.kind;
  d.reason = request.reason;
  d.requested = now_seconds();
  d.deadline_seconds = request.deadline_seconds;
  d.resumed_from = resumed_from;
  d.report = {{"containers", json::array()}};
  state_.add_drain(d);
  if (drain_thread_.joinable()) drain_thread_.join();  // the last one has finished
  cancel_drain_ = false;
  drain_running_ = true;
  drain_thread_ = std::thread([this, id = d.id, s = d.deadline_seconds] { run_drain(id, s); });
  event({.kind = "drain",
         .outcome = "started",
         .detail = fmt::format(
             "drain {} ({}): {}; deadline {} s{}", d.id, to_string(d.kind), d.reason,
             d.deadline_seconds,
             resumed_from ? fmt::format(", resumes drain {}", resumed_from) : std::string())});
  log_(LogLevel::kInfo,
       fmt::format("drain {} started: {} (deadline {} s)", d.id, d.reason, d.deadline_seconds));
  return d;
}

void Agent::run_drain(int64_t id, double deadline_seconds) {
  FinalizeOptions options;
  options.deadline_seconds = deadline_seconds;
  options.parallel = config_.agent.finalize_parallel;
  options.cancel = &cancel_drain_;
  options.on_start = [this, id](const std::vector<ContainerRecord>& chosen) {
    std::lock_guard lock(mutex_);
    if (auto* d = state_.find_drain(id)) d->total = chosen.size();
    save_locked();
  };
  options.on_result = [this, id](const FinalizeResult& r) { record_result(id, r); };
  std::thread hook;  // Process jobs, beside the containers.
  nlohmann::json extra = nlohmann::json::object();
  if (drain_hook_) {
    hook = std::thread([this, deadline_seconds, &extra] { extra = drain_hook_(deadline_seconds); });
  }
  if (!config_.peers.nodes.empty()) {  // a group's members on other nodes: with them
    options.group_checkpoint = [this](const NodeGroup& g,
                                      std::chrono::steady_clock::time_point deadline) {
      return checkpoint_group_for_drain(g, config_, runc_, deadline);
    };
  }
  FinalizeReport report = finalize_node(config_, runc_, options);
  if (hook.joinable()) hook.join();
  finish_drain(id, report, extra);
}

void Agent::record_result(int64_t id, const FinalizeResult& r) {
  std::lock_guard lock(mutex_);
  auto& c = state_.counters;
  if (r.outcome == FinalizeOutcome::kSkipped) {
    ++c.checkpoints_skipped;
  } else {
    c.checkpoints["drain"].count(r.outcome == FinalizeOutcome::kCheckpointed, r.seconds, r.bytes);
  }
  if (auto* d = state_.find_drain(id)) {
    ++d->done;
    d->report["containers"].push_back({{"namespace", r.container.ns},
                                       {"id", r.container.id},
                                       {"result", to_string(r.outcome)},
                                       {"seconds", r.seconds},
                                       {"detail", r.detail}});
  }
  event({.kind = "checkpoint",
         .ns = r.container.ns,
         .id = r.container.id,
         .outcome = std::string(checkpoint_outcome(r.outcome)),
         .duration_ms = r.seconds * 1000,
         .detail = r.detail});
  save_locked();
}

void Agent::finish_drain(int64_t id, const FinalizeReport& report, const nlohmann::json& extra) {
  std::lock_guard lock(mutex_);
  bool cut_short = std::any_of(report.containers.begin(), report.containers.end(), [](auto& r) {
    return r.outcome == FinalizeOutcome::kSkipped && r.detail.starts_with("cancelled");
  });
  std::size_t bad = report.not_checkpointed();
  std::string summary =
      fmt::format("{} containers, {} checkpointed, {} not, in {:.2f} s", report.containers.size(),
                  report.containers.size() - bad, bad, report.total_seconds);
  std::size_t jobs = 0, jobs_bad = 0;
  if (extra.is_object() && extra.contains("jobs") && extra["jobs"].is_array()) {
    for (const auto& j : extra["jobs"]) {
      ++jobs;
      if (j.value("result", "") != "checkpointed") ++jobs_bad;
    }
    if (jobs != 0) {
      summary += fmt::format("; {} process jobs, {} checkpointed, {} not", jobs, jobs - jobs_bad,
                             jobs_bad);
    }
  }
  if (auto* d = state_.find_drain(id)) {
    d->report = finalize_report_json(report);
    if (extra.is_object()) {
      for (const auto& [k, v] : extra.items()) d->report[k] = v;
    }
    d->finished = now_seconds();
    d->state = !cut_short ? "done" : stopping_ ? "interrupted" : "cancelled";
    event({.kind = "drain",
           .outcome = d->state,
           .duration_ms = report.total_seconds * 1000,
           .detail = fmt::format("drain {}: {}", id, summary)});
  }
  log_(bad + jobs_bad == 0 ? LogLevel::kInfo : LogLevel::kWarn,
       fmt::format("drain {}: {}", id, summary));
  drain_running_ = false;
  save_locked();
  wake_.notify_all();
}

void Agent::resume_interrupted_locked() {
  if (state_.drains.empty()) return;
  DrainRecord& last = state_.drains.back();
  if (last.state != "running" && last.state != "interrupted") return;
  bool unfinished_run = last.state == "running";
  last.state = "interrupted";
  if (unfinished_run) last.finished = now_seconds();
  if (!state_.draining) return;
  double left = static_cast<double>(last.requested) + last.deadline_seconds -
                static_cast<double>(now_seconds());
  if (left < 1) {
    log_(LogLevel::kWarn,
         fmt::format("drain {} was interrupted and its deadline has passed: not resumed", last.id));
    return;
  }
  (void)start_drain_locked({last.kind, last.reason, std::floor(left)}, last.id);
}

json Agent::undrain() {
  std::lock_guard lock(mutex_);
  json out = {{"draining", false}, {"was_draining", state_.draining}, {"cancelled_drain", nullptr}};
  if (drain_running_) {
    cancel_drain_ = true;
    out["cancelled_drain"] = state_.drains.back().id;
  }
  state_.draining = false;
  state_.draining_since = 0;
  state_.drain_reason.clear();
  if (::unlink(draining_flag(config_).c_str()) != 0 && errno != ENOENT) {
    log_(LogLevel::kError, errno_error("unlink " + draining_flag(config_)).message());
  }
  event({.kind = "undrain",
         .outcome = "ok",
         .detail = out["cancelled_drain"].is_null()
                       ? std::string("node no longer draining")
                       : fmt::format("node no longer draining; drain {} cancelled",
                                     out["cancelled_drain"].get<int64_t>())});
  save_locked();
  return out;
}

// ---------------------------------------------------------------- notices

void Agent::on_notice(const Notice& n) {
  std::lock_guard lock(mutex_);
  NoticeRecord rec{std::string(notice_kind(n.kind)), n.action, n.time_text, now_seconds()};
  auto& last = state_.last_notice;
  if (last && last->kind == rec.kind && last->action == rec.action &&
      last->time_text == rec.time_text) {
    return;  // the same notice, seen again by the next poll
  }
  last = rec;
  ++state_.counters.notices[rec.kind];
  event({.kind = "notice",
         .outcome = rec.action,
         .detail = fmt::format("{} notice: {} at {}", rec.kind, rec.action, rec.time_text)});
  log_(LogLevel::kWarn, fmt::format("{} notice: {} at {}", rec.kind, rec.action, rec.time_text));
  bool drains = n.kind == Notice::Kind::kSpot || config_.agent.rebalance_action == "drain";
  if (drains && !stopping_ && !drain_running_) {
    double deadline = n.deadline ? static_cast<double>(n.deadline->count())
                                 : notice_deadline_seconds(n, SysClock::now(),
                                                           config_.agent.safety_margin_seconds);
    DrainKind kind = n.kind == Notice::Kind::kSpot ? DrainKind::kNotice : DrainKind::kRebalance;
    (void)start_drain_locked(
        {kind, fmt::format("{} notice: {} at {}", rec.kind, rec.action, rec.time_text),
         std::max(1.0, deadline)},
        0);
  } else if (drains && drain_running_) {
    log_(LogLevel::kInfo, "a drain is already running: the notice is recorded");
  }
  save_locked();
}

void Agent::on_watcher_poll(bool ok, const std::string& error) {
  std::lock_guard lock(mutex_);
  watcher_.state = ok ? "polling" : "error";
  watcher_.last_poll = now_seconds();
  watcher_.last_error = ok ? std::string() : error;
  if (ok) {
    watcher_.last_success = watcher_.last_poll;
    watcher_.consecutive_errors = 0;
  } else {
    ++watcher_.consecutive_errors;
  }
}

// ---------------------------------------------------------------- status and events

json Agent::status() {
  json containers = json::array();
  for (const auto& rec : ContainerRegistry(config_.state_dir).all()) {
    auto st = RuncClient(runc_, rec.runc_root).state(rec.id);
    containers.push_back({{"namespace", rec.ns},
                          {"id", rec.id},
                          {"key", rec.key},
                          {"status", st ? st->status : "gone"},
                          {"store", rec.store},
                          {"created", rec.created}});
  }
  json recent = json::array();
  for (const auto& e : events_.recent(kStatusEvents)) recent.push_back(event_json(e));

  std::lock_guard lock(mutex_);
  json drain = nullptr;
  if (!state_.drains.empty()) drain = drain_json(state_.drains.back());
  json criu = criu_report(config_);  // probes cached after the first status call
  return {{"node", host_name()},
          {"version", kVersion},
          {"criu", criu},
          {"pid", ::getpid()},
          {"started", started_},
          {"draining", state_.draining},
          {"draining_since", state_.draining ? json(state_.draining_since) : json(nullptr)},
          {"drain_kind", state_.draining ? json(to_string(state_.drain_kind)) : json(nullptr)},
          {"drain_reason", state_.draining ? json(state_.drain_reason) : json(nullptr)},
          {"drain_running", drain_running_},
          {"drain", drain},
          {"watcher",
           {{"endpoint", config_.agent.imds_endpoint},
            {"state", watcher_.state},
            {"last_poll", watcher_.last_poll ? json(watcher_.last_poll) : json(nullptr)},
            {"last_error", watcher_.last_error},
            {"last_notice", notice_json(state_.last_notice)}}},
          {"containers", containers},
          {"events", recent}};
}

std::optional<json> Agent::drain_record(int64_t id) {
  std::lock_guard lock(mutex_);
  const DrainRecord* d = state_.find_drain(id);
  if (d == nullptr) return std::nullopt;
  return drain_json(*d);
}

json Agent::events(uint64_t since, std::size_t limit) const {
  json list = json::array();
  uint64_t last = since;
  for (const auto& e : events_.since(since, limit)) {
    list.push_back(event_json(e));
    last = e.seq;
  }
  return {{"events", list}, {"next", last}};
}

std::string Agent::metrics() {
  refresh();
  std::lock_guard lock(mutex_);
  return render_metrics({.counters = state_.counters,
                         .managed_containers = managed_,
                         .quarantined_checkpoints = quarantined_,
                         .draining = state_.draining,
                         .key_ages = key_ages_,
                         .keys = keys_total_,
                         .watcher = {.enabled = !config_.agent.imds_endpoint.empty(),
                                     .last_success = watcher_.last_success,
                                     .consecutive_errors = watcher_.consecutive_errors}});
}

// ---------------------------------------------------------------- the scan

void Agent::refresh() {
  std::lock_guard scan(scan_mutex_);
  auto records = ContainerRegistry(config_.state_dir).all();
  std::set<std::string> stores = {config_.store_path};
  ActivityCursor cursor;
  {
    std::lock_guard lock(mutex_);
    stores.insert(state_.stores.begin(), state_.stores.end());
    cursor = state_.activity;
  }
  for (const auto& rec : records) {
    if (!rec.store.empty()) stores.insert(rec.store);
  }
  std::map<std::string, std::string> failed;                   // path -> "ns/key: reason"
  std::map<std::pair<std::string, std::string>, long> newest;  // (owner, key) -> created
  for (const auto& store : stores) {
    auto all = CheckpointStore(store).list_all(false);
    if (!all) continue;
    for (const auto& c : *all) {
      if (c.state == CheckpointState::kFailed)
        failed[c.path] = c.ns + "/" + c.key + ": " + c.reason;
      if (c.state == CheckpointState::kCommitted || c.state == CheckpointState::kVerified) {
        auto created = parse_utc_time(c.created);
        if (!created) continue;
        long& t = newest[{c.ns, c.key}];
        t = std::max(t, *created);
      }
    }
  }
  auto ages = key_ages(newest, records);
  // The node's activity log: what archctl and arch-runc did (a bounded number of chunks per
  // pass; the rest waits for the next one).
  std::vector<ActivityRecord> activity;
  std::size_t invalid = 0;
  for (int chunk = 0; chunk < 8; ++chunk) {
    auto batch = read_activity(config_.state_dir, cursor);
    if (!batch) {
      log_(LogLevel::kWarn, "activity log: " + batch.error().message());
      break;
    }
    cursor = batch->cursor;
    invalid += batch->invalid;
    for (auto& r : batch->records) activity.push_back(std::move(r));
    if (!batch->more) break;
  }

  std::lock_guard lock(mutex_);
  bool changed = !state_.seen_restores.empty() || !(cursor == state_.activity);
  state_.seen_restores.clear();
  state_.activity = cursor;
  state_.counters.activity_invalid += invalid;
  for (const auto& r : activity) count_activity_locked(r);
  changed |= !activity.empty() || invalid != 0;
  std::set<std::string> seen_failed(state_.seen_quarantined.begin(), state_.seen_quarantined.end());
  state_.seen_quarantined.clear();
  for (const auto& [path, what] : failed) {
    state_.seen_quarantined.push_back(path);
    if (seen_failed.contains(path)) continue;
    changed = true;
    event({.kind = "quarantine", .outcome = "moved-aside", .detail = path + " (" + what + ")"});
  }
  changed |= state_.seen_quarantined.size() != seen_failed.size();
  std::vector<std::string> store_list(stores.begin(), stores.end());
  if (store_list.size() > 64) store_list.resize(64);
  changed |= store_list != state_.stores;
  state_.stores = std::move(store_list);
  managed_ = records.size();
  quarantined_ = failed.size();
  key_ages_ = std::move(ages);
  keys_total_ = newest.size();
  if (changed) save_locked();
}

std::vector<KeyAge> Agent::key_ages(
    const std::map<std::pair<std::string, std::string>, long>& newest,
    const std::vector<ContainerRecord>& records) const {
  auto cap = static_cast<std::size_t>(std::max(0, config_.agent.metrics_max_keys));
  long now = now_seconds();
  auto age = [now](long t) { return static_cast<double>(std::max(0L, now - t)); };
  std::vector<KeyAge> out;
  std::set<std::pair<std::string, std::string>> taken;
  // This node's containers first (the registry is root's), then the oldest of the rest.
  for (const auto& rec : records) {
    if (out.size() >= cap) break;
    auto it = newest.find({rec.owner, rec.key});
    if (it == newest.end() || !taken.insert(it->first).second) continue;
    out.push_back({it->first.first, it->first.second, age(it->second)});
  }
  std::vector<std::pair<long, std::pair<std::string, std::string>>> rest;
  for (const auto& [k, t] : newest) {
    if (!taken.contains(k)) rest.push_back({t, k});
  }
  std::sort(rest.begin(), rest.end());
  for (const auto& [t, k] : rest) {
    if (out.size() >= cap) break;
    out.push_back({k.first, k.second, age(t)});
  }
  return out;
}

void Agent::count_activity_locked(const ActivityRecord& r) {
  static const std::set<std::string> kCheckpointers = {"archctl", "finalize", "on_stop"};
  static const std::set<std::string> kRestorers = {"create"};
  bool checkpoint = r.what == "checkpoint";
  if (!(checkpoint ? kCheckpointers : kRestorers).contains(r.source)) {
    ++state_.counters.activity_invalid;
    return;
  }
  bool ok = r.outcome == "ok";
  auto& counters = checkpoint ? state_.counters.checkpoints : state_.counters.restores;
  counters[r.source].count(ok, r.ms / 1000, r.bytes);
  std::string detail;
  if (checkpoint) {
    detail =
        fmt::format("by {}: {}", r.source == "on_stop" ? "arch-runc on stop" : r.source, r.detail);
  } else {
    detail = ok ? "restored by arch-runc from " + r.detail : "restore by arch-runc: " + r.detail;
  }
  event({.time = format_utc_ns(static_cast<int64_t>(r.time * 1e9), UtcPrecision::kMillis),
         .kind = r.what,
         .ns = r.ns,
         .id = r.id,
         .outcome = r.outcome,
         .duration_ms = r.ms,
         .detail = std::move(detail)});
}

void Agent::record_periodic(Event e, uint64_t bytes) {
  // Periodic checkpoints are archd's own: counted here (with the bytes they committed).
  if (e.kind == "checkpoint" && (e.outcome == "periodic" || e.outcome == "periodic-failed")) {
    std::lock_guard lock(mutex_);
    state_.counters.checkpoints["periodic"].count(e.outcome == "periodic", e.duration_ms / 1000,
                                                  bytes);
    save_locked();
  }
  event(std::move(e));
}

void Agent::record_event(Event e) {
  // Process jobs are archd's own: counted here, from their events.
  if (e.kind == "job") {
    std::lock_guard lock(mutex_);
    double seconds = e.duration_ms / 1000;
    if (e.outcome == "checkpointed" || e.outcome == "checkpoint-failed") {
      state_.counters.checkpoints["job"].count(e.outcome == "checkpointed", seconds, 0);
      save_locked();
    } else if (e.outcome == "restored" || e.outcome == "restore-failed") {
      state_.counters.restores["job"].count(e.outcome == "restored", seconds, 0);
      save_locked();
    }
  }
  event(std::move(e));
}

void Agent::housekeeping_loop() {
  std::unique_lock lock(mutex_);
  auto swept = std::chrono::steady_clock::now() - kHoldSweepInterval;
  while (!stopping_) {
    lock.unlock();
    refresh();
    if (std::chrono::steady_clock::now() - swept >= kHoldSweepInterval) {
      // Connection holds left by a group restore killed before its release.
      swept = std::chrono::steady_clock::now();
      if (auto n = RestoreBarrier::sweep_expired_holds(static_cast<long>(::time(nullptr)))) {
        log_(LogLevel::kWarn,
             fmt::format("removed {} expired connection hold rule(s) of an interrupted group "
                         "restore (iptables, tagged arch-group)",
                         n));
      }
    }
    lock.lock();
    wake_.wait_for(lock, kHousekeepingInterval, [this] { return stopping_; });
  }
}

// ---------------------------------------------------------------- persistence

Result<void> Agent::write_flag_locked() {
  std::string flag = draining_flag(config_);
  if (auto made = make_private_dirs(config_.state_dir); !made) return made;
  json body = {{"reason", state_.drain_reason},
               {"kind", to_string(state_.drain_kind)},
               {"since", state_.draining_since},
               {"pid", ::getpid()}};
  return write_file_atomic(flag, body.dump() + "\n", 0600);
}

void Agent::save_locked() {
  if (auto saved = save_node_state(config_.agent.state_file, state_); !saved) {
    log_(LogLevel::kError, "save state: " + saved.error().message());
  }
}

void Agent::event(Event e) {
  Error error;
  events_.append(std::move(e), &error);
  if (!error.text().empty()) log_(LogLevel::kWarn, "event log: " + error.message());
}

}  // namespace arch::agent
