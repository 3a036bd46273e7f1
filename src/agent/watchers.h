// Watchers: archd's background feeds.
//   NoticeWatcher: polls the EC2 metadata service (IMDSv2) every [agent] imds_poll_seconds
//     and hands each reclaim notice or rebalance recommendation to the agent, which drains.
//   ExitWatcher: follows containerd's event stream and records each container's exit status
//     where arch-runc reads it (<state dir>/exits/<namespace>/<id>).
//   ExportWatcher: serves again the page exports of live migrations that an earlier archd
//     left in the state dir (peer/migrate_exports.h) and cleans up each once its post-copy
//     is over (checked every 250 ms).
// Each runs one thread, started by start() and stopped promptly by stop().
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

#include "agent.h"
#include "config/node_config.h"

namespace arch {
class ContainerdEventWatcher;
class ResumedExports;
}  // namespace arch

namespace arch::agent {

class NoticeWatcher {
 public:
  NoticeWatcher(Agent& agent, const NodeConfig& config, Logger log);
  ~NoticeWatcher() { stop(); }
  /// Does nothing when [agent] imds_endpoint is empty.
  void start();
  void stop();

 private:
  void loop();
  Agent& agent_;
  NodeConfig config_;
  Logger log_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread thread_;
};

class ExitWatcher {
 public:
  ExitWatcher(const NodeConfig& config, Logger log);
  ~ExitWatcher();
  void start();
  void stop();
  [[nodiscard]] uint64_t recorded() const { return recorded_.load(); }

 private:
  NodeConfig config_;
  Logger log_;
  std::unique_ptr<ContainerdEventWatcher> watcher_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> recorded_{0};
  std::thread thread_;
};

class ExportWatcher {
 public:
  ExportWatcher(const NodeConfig& config, Logger log);
  ~ExportWatcher();
  /// Loads the persisted exports (call it before the peer listener starts) and, when there
  /// are some, watches them until each is finished. Returns how many were loaded.
  std::size_t start();
  /// Stops every post-copy judgement (this watcher's and the migrations'): call it before
  /// the peer listener stops, whose cut connections say nothing about the page servers.
  void stop();

 private:
  void loop();
  std::unique_ptr<ResumedExports> exports_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace arch::agent
