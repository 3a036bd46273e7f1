// Agent: archd's core. It owns the node's drain state (persisted in [agent] state_file and
// mirrored by the <state dir>/draining flag that arch-runc reads), runs drains (finalize of
// every running ARCH-enabled container, in a worker thread, with a deadline), takes
// notices from the reclaim-notice watcher, counts what it sees for the metrics and records
// it in the event log. The API server and the watcher call it; it never prints (messages
// go to the Logger main gives it).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>

#include "base/error.h"
#include "config/node_config.h"
#include "container/finalize.h"
#include "event_log.h"
#include "managed/activity_log.h"
#include "managed/container_registry.h"
#include "metrics.h"
#include "node_state.h"
#include "periodic_runner.h"

namespace arch::agent {

/// A reclaim notice, as the watcher (src/lib/imds_client: ImdsNotice) hands it to
/// Agent::on_notice().
struct Notice {
  enum class Kind { kSpot, kRebalance };
  Kind kind = Kind::kSpot;
  std::string action;     ///< "terminate", "stop", "hibernate"; "rebalance".
  std::string time_text;  ///< The notice's time as the service sent it (identifies it).
  /// Spot: the reclaim time (epoch: unknown). Rebalance: when it was issued.
  std::chrono::system_clock::time_point time{};
  /// The finalize deadline when the watcher computed it (arch::finalize_deadline());
  /// otherwise archd derives it from `time` less [agent] safety_margin_seconds.
  std::optional<std::chrono::seconds> deadline;
};

/// Where the agent's messages go (main: stderr, so journald).
using Logger = std::function<void(LogLevel, const std::string&)>;

/// What POST /v1/node/drain (or a notice) asks for.
struct DrainRequest {
  DrainKind kind = DrainKind::kManual;
  std::string reason;
  double deadline_seconds = 110;
};

/// The finalize deadline for a notice without one: time - now - margin, clamped to
/// [5, 300] s; a spot notice without a time, or a rebalance, gives 120 s - margin (min 5).
double notice_deadline_seconds(const Notice& notice, std::chrono::system_clock::time_point now,
                               int safety_margin_seconds);

class Agent {
 public:
  /// `runc`: the real runc (resolved by main).
  Agent(NodeConfig config, std::string runc, Logger log);
  ~Agent();
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  /// Loads the state (refusing a newer format), opens the event log, re-asserts the
  /// draining flag, resumes a drain that archd's last run did not finish (with what is
  /// left of its deadline) and starts the housekeeping thread.
  Result<void> start();
  /// Graceful stop: checkpoints in progress finish, containers not yet started are left
  /// (the drain is "interrupted" and resumed at the next start), threads joined, state saved.
  void stop();

  /// GET /v1/node/status.
  nlohmann::json status();
  /// POST /v1/node/drain: marks the node draining and starts finalize. Errors: EINVAL (bad
  /// request), EBUSY (a drain is running).
  Result<DrainRecord> drain(DrainRequest request);
  /// POST /v1/node/undrain: clears draining; a running drain is cancelled (checkpoints in
  /// progress finish, the rest are skipped).
  nlohmann::json undrain();
  /// GET /v1/drains/ID: the drain's record (with its report), if archd still keeps it.
  std::optional<nlohmann::json> drain_record(int64_t id);
  /// GET /v1/events?since=N&limit=M.
  nlohmann::json events(uint64_t since, std::size_t limit) const;
  /// The Prometheus exposition (refreshes the registry/store scan first).
  std::string metrics();

  /// The watcher's hook: a notice is pending. Called on every poll that sees it; a notice
  /// already seen (same kind, action and time) changes nothing.
  void on_notice(const Notice& notice);
  /// The watcher's hook: one poll done (ok) or failed (error).
  void on_watcher_poll(bool ok, const std::string& error);

  /// Scans the registry and the checkpoint stores: managed containers, restores seen,
  /// checkpoints moved aside. Run by the housekeeping thread and before each scrape.
  void refresh();

  [[nodiscard]] const NodeConfig& config() const { return config_; }

  /// Run, in a thread of its own, beside each drain's finalize, with the drain's deadline in
  /// seconds (archd: checkpoints the process jobs). Its JSON object's members are added to
  /// the drain's report (archd: "jobs", one result per job). Set before start().
  void set_drain_hook(std::function<nlohmann::json(double)> hook) { drain_hook_ = std::move(hook); }
  /// Appends an event to archd's event log (for other parts of archd: process jobs).
  /// A job's checkpoint or restore (outcome checkpointed, checkpoint-failed, restored,
  /// restore-failed) is also counted in the metrics (source "job").
  void record_event(Event e);
  /// A periodic checkpoint's event (PeriodicRunner), counted with the bytes it committed.
  void record_periodic(Event e, uint64_t bytes);

 private:
  Result<DrainRecord> start_drain_locked(DrainRequest request, int64_t resumed_from);
  void run_drain(int64_t id, double deadline_seconds);
  void record_result(int64_t id, const FinalizeResult& result);
  void finish_drain(int64_t id, const FinalizeReport& report, const nlohmann::json& extra);
  void resume_interrupted_locked();
  Result<void> write_flag_locked();
  void save_locked();
  void event(Event e);
  void housekeeping_loop();
  void count_activity_locked(const ActivityRecord& record);
  std::vector<KeyAge> key_ages(const std::map<std::pair<std::string, std::string>, long>& newest,
                               const std::vector<ContainerRecord>& records) const;

  NodeConfig config_;
  std::string runc_;
  Logger log_;
  EventLog events_;
  long started_ = 0;

  mutable std::mutex mutex_;  // Everything below.
  NodeState state_;
  std::thread drain_thread_;
  bool drain_running_ = false;
  std::atomic<bool> cancel_drain_{false};
  bool stopping_ = false;
  std::condition_variable wake_;
  std::thread housekeeping_;
  std::unique_ptr<PeriodicRunner> periodic_;  // periodic checkpoints (container/periodic.h)
  std::size_t managed_ = 0;
  std::size_t quarantined_ = 0;
  struct Watcher {
    std::string state;
    long last_poll = 0;
    std::string last_error;
    long last_success = 0;
    uint64_t consecutive_errors = 0;
  } watcher_;
  std::vector<KeyAge> key_ages_;
  std::size_t keys_total_ = 0;

  std::mutex scan_mutex_;  // One refresh() at a time.
  std::function<nlohmann::json(double)> drain_hook_;
};

}  // namespace arch::agent
