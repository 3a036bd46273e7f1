// PeriodicRunner: archd's thread for periodic checkpoints. Every tick it lists the running
// managed containers, and checkpoints (leave running) each one whose interval
// (container/periodic.h) has passed since its last periodic checkpoint, one at a time, never
// while the node drains. Each result is an event (kind "checkpoint", outcome "periodic" or
// "periodic-failed", with the frozen time and size).
// Members of a group (ARCH_GROUP, or their Kubernetes pod's group) are never checkpointed
// alone: the group is, as one unit (all members frozen, dumped, committed as one group
// generation, left running), on its own timer, every group_checkpoint_interval (the
// smallest of its members' intervals), once every member runs; one event per member.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "config/node_config.h"
#include "event_log.h"

namespace arch::agent {

class PeriodicRunner {
 public:
  using Clock = std::chrono::steady_clock;
  /// `draining`: whether the node drains (no periodic checkpoint then); `record`: the event
  /// log, with the bytes a checkpoint committed (0 for other events). Both are called from
  /// the runner's thread.
  using Record = std::function<void(Event, uint64_t bytes)>;
  PeriodicRunner(const NodeConfig& config, std::string runc, std::function<bool()> draining,
                 Record record);
  ~PeriodicRunner();
  PeriodicRunner(const PeriodicRunner&) = delete;
  PeriodicRunner& operator=(const PeriodicRunner&) = delete;

  void start();
  /// Waits for a checkpoint in progress to finish.
  void stop();
  /// One pass (the thread's body; for tests).
  void tick(Clock::time_point now);

  /// How often the thread looks: half the node's min_interval, between 1 s and 10 s.
  [[nodiscard]] std::chrono::milliseconds period() const;

 private:
  const NodeConfig& config_;
  std::string runc_;
  std::function<bool()> draining_;
  Record record_;
  /// Records a periodic checkpoint's event of one container; a multi-line detail is cut to
  /// its first line.
  void record_checkpoint(const std::string& ns, const std::string& id, const char* outcome,
                         double ms, const std::string& detail, uint64_t bytes);
  // runc root + id (or "group:<owner>/<name>") -> last attempt
  std::map<std::string, Clock::time_point> last_;
  std::map<std::string, std::string> warned_;  // runc root + id -> last note or error
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace arch::agent
