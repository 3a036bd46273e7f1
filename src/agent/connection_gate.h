// ConnectionGate: the bound on archd's HTTP connections, so that slow or idle clients
// cannot starve the API: a fixed pool of workers, a cap on the connections held at once
// (a new one cuts the oldest), and a deadline per connection counted from its accept.
#pragma once

#include <httplib.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "base/unique_fd.h"

namespace arch::agent {

/// The gate's bounds.
struct ConnectionLimits {
  std::size_t max_connections = 16;           ///< Held at once; also the number of workers.
  std::chrono::milliseconds deadline{10000};  ///< From accept to the connection's end.
};

/// A cpp-httplib task queue (Server::new_task_queue) that serves each accepted connection
/// on one of max_connections workers and cuts (shutdown(2)) a connection when its deadline
/// passes, or when it is the oldest and a new one arrives with max_connections held.
/// httplib does not hand the accepted socket to the queue, so the gate finds it: sockets
/// in /proc/self/fd that are not listening and that `is_accepted` recognises (by their
/// local address), each held through a dup of its own so a reused fd number is never cut.
class ConnectionGate : public httplib::TaskQueue {
 public:
  ConnectionGate(ConnectionLimits limits, std::function<bool(int fd)> is_accepted);
  ~ConnectionGate() override;
  ConnectionGate(const ConnectionGate&) = delete;
  ConnectionGate& operator=(const ConnectionGate&) = delete;

  void enqueue(std::function<void()> fn) override;
  void shutdown() override;

 private:
  using Clock = std::chrono::steady_clock;
  struct Connection {
    UniqueFd socket;  // our dup: shutdown(2) through it reaches httplib's fd
    uint64_t inode = 0;
    Clock::time_point accepted;
    bool cut = false;
    bool owned = false;  // a worker will forget it when its task ends
  };
  struct Task {
    std::function<void()> fn;
    uint64_t id = 0;  // 0: the connection was not identified
  };

  std::vector<Connection> discover_locked();
  void cut_locked(Connection& c);
  void work();
  void watch();

  ConnectionLimits limits_;
  std::function<bool(int)> is_accepted_;
  std::mutex mutex_;
  std::condition_variable tasks_ready_;
  std::condition_variable stop_watch_;
  std::deque<Task> tasks_;
  std::map<uint64_t, Connection> connections_;  // by id, oldest first
  uint64_t next_id_ = 1;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
  std::thread watcher_;
};

}  // namespace arch::agent
