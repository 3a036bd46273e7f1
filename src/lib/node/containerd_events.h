// ContainerdEventWatcher: follows containerd's event stream over its gRPC API and reports
// every task exit, in every namespace (ctr's, Docker's "moby", Kubernetes' "k8s.io").
//
// Protocol: containerd.services.events.v1.Events/Subscribe on containerd's unix socket
// with the filter topic=="/tasks/exit" and no namespace header (a subscription without
// a namespace filter sees all namespaces). Each Envelope names the namespace and carries a
// containerd.events.TaskExit in a google.protobuf.Any (proto/containerd_events.proto holds
// our copy of the messages). The stream is live only: exits that happen while the watcher
// is disconnected are not seen (their status stays unknown).
//
// Lives in its own library (arch_events) so that only archd and the tests link gRPC.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>

#include "base/error.h"
#include "managed/exit_status.h"

namespace grpc {
class ClientContext;
}

namespace arch {

class ContainerdEventWatcher {
 public:
  /// Called on the watcher's thread when the connection comes up (true) or goes down
  /// (false, with the reason): on changes only, so a containerd that stays unreachable is
  /// reported once.
  using StateCallback = std::function<void(bool connected, const std::string& detail)>;

  /// `address`: containerd's socket path ("/run/containerd/containerd.sock"), or a gRPC
  /// target already starting with "unix:".
  explicit ContainerdEventWatcher(std::string address);
  ContainerdEventWatcher(const ContainerdEventWatcher&) = delete;
  ContainerdEventWatcher& operator=(const ContainerdEventWatcher&) = delete;
  ~ContainerdEventWatcher();

  /// Optional; set before run().
  void set_state_callback(StateCallback callback) { on_state_ = std::move(callback); }

  /// Subscribes and calls `on_exit` (on this thread) for every task exit, exec'd processes
  /// included (see is_init_exit). When containerd is unreachable or the stream breaks it
  /// reconnects with backoff (0.1 s doubling to 2 s). Returns when `stop` becomes true
  /// (seen within ~0.1 s) or stop() is called (at once); fails only on a bad address.
  Result<void> run(const std::function<void(const TaskExitEvent&)>& on_exit,
                   const std::atomic<bool>& stop);

  /// Makes run() return promptly: cancels the open call and any backoff wait. Callable
  /// from any thread, before or during run(); sticky (a later run() returns at once).
  void stop();

  /// True while a subscription is established.
  [[nodiscard]] bool connected() const { return connected_.load(); }
  /// Task-exit events delivered to on_exit so far.
  [[nodiscard]] uint64_t exits_seen() const { return exits_seen_.load(); }
  /// Connection attempts that failed or streams that broke.
  [[nodiscard]] uint64_t disconnects() const { return disconnects_.load(); }

 private:
  /// One subscription, until the stream ends; an error says why it ended.
  Result<void> subscribe_once(const std::function<void(const TaskExitEvent&)>& on_exit);
  /// Waits up to `ms` milliseconds unless stopping; returns false when stopping.
  bool sleep_unless_stopped(int ms);
  void report(bool connected, const std::string& detail);

  std::string target_;
  StateCallback on_state_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;                // guarded by mu_
  grpc::ClientContext* call_ = nullptr;  // the open call, guarded by mu_

  std::optional<bool> reported_;  // the state last passed to on_state_ (run()'s thread)
  std::atomic<bool> connected_{false};
  std::atomic<uint64_t> exits_seen_{0};
  std::atomic<uint64_t> disconnects_{0};
};

}  // namespace arch
