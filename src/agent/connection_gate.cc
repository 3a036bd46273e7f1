// ConnectionGate: workers, a watcher thread for deadlines, and the discovery of each
// accepted socket (readlink /proc/self/fd/N = "socket:[inode]", dup, check it).
#include "connection_gate.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <set>
#include <string>

namespace arch::agent {
namespace {

// The inode of the socket behind `fd_name` in /proc/self/fd, or 0.
uint64_t socket_inode(int proc_fd_dir, const char* fd_name) {
  char target[64] = {};
  ssize_t n = ::readlinkat(proc_fd_dir, fd_name, target, sizeof target - 1);
  if (n <= 0) return 0;
  std::string_view t(target, static_cast<size_t>(n));
  if (!t.starts_with("socket:[") || !t.ends_with("]")) return 0;
  return std::strtoull(target + 8, nullptr, 10);
}

bool is_listening(int fd) {
  int on = 0;
  socklen_t len = sizeof on;
  return ::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) == 0 && on != 0;
}

}  // namespace

ConnectionGate::ConnectionGate(ConnectionLimits limits, std::function<bool(int)> is_accepted)
    : limits_(limits), is_accepted_(std::move(is_accepted)) {
  limits_.max_connections = std::max<std::size_t>(1, limits_.max_connections);
  for (std::size_t i = 0; i < limits_.max_connections; ++i)
    workers_.emplace_back([this] { work(); });
  watcher_ = std::thread([this] { watch(); });
}

ConnectionGate::~ConnectionGate() {
  shutdown();
}

// Called by httplib's accept loop right after accept(2): the new socket is in our fd
// table now. It is tied to the task when exactly one new one is found.
void ConnectionGate::enqueue(std::function<void()> fn) {
  std::lock_guard lock(mutex_);
  auto found = discover_locked();
  Task task{std::move(fn), 0};
  for (auto& c : found) {
    uint64_t id = next_id_++;
    if (found.size() == 1) {
      c.owned = true;
      task.id = id;
    }
    connections_.emplace(id, std::move(c));
  }
  std::size_t held = 0;
  for (const auto& [id, c] : connections_) held += c.cut ? 0 : 1;
  for (auto it = connections_.begin(); held > limits_.max_connections && it != connections_.end();
       ++it) {
    if (it->second.cut) continue;
    cut_locked(it->second);  // the oldest first
    --held;
  }
  tasks_.push_back(std::move(task));
  tasks_ready_.notify_one();
}

std::vector<ConnectionGate::Connection> ConnectionGate::discover_locked() {
  std::vector<Connection> out;
  std::set<uint64_t> known;
  for (const auto& [id, c] : connections_) known.insert(c.inode);
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return out;
  int dir_fd = ::dirfd(dir);
  while (dirent* e = ::readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    uint64_t inode = socket_inode(dir_fd, e->d_name);
    if (inode == 0 || known.contains(inode)) continue;
    int fd = std::atoi(e->d_name);
    if (fd == dir_fd) continue;
    UniqueFd copy(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
    struct stat st {};
    // The fd may have been closed and reused since the readlink: check the copy.
    if (!copy || ::fstat(copy.get(), &st) != 0 || st.st_ino != inode) continue;
    if (is_listening(copy.get()) || !is_accepted_(copy.get())) continue;
    known.insert(inode);
    out.push_back({std::move(copy), inode, Clock::now(), false, false});
  }
  ::closedir(dir);
  return out;
}

// Ends the connection for httplib: its reads and writes fail, it closes its fd, and the
// worker is free again.
void ConnectionGate::cut_locked(Connection& c) {
  if (c.cut) return;
  ::shutdown(c.socket.get(), SHUT_RDWR);
  c.cut = true;
}

void ConnectionGate::work() {
  for (;;) {
    Task task;
    {
      std::unique_lock lock(mutex_);
      tasks_ready_.wait(lock, [&] { return stopping_ || !tasks_.empty(); });
      if (tasks_.empty()) return;  // stopping, and nothing left to close
      task = std::move(tasks_.front());
      tasks_.pop_front();
    }
    task.fn();
    std::lock_guard lock(mutex_);
    if (task.id != 0) connections_.erase(task.id);
  }
}

// Cuts connections past their deadline; forgets unowned ones once cut (httplib closes
// its fd on its own; ours only keeps the socket until then).
void ConnectionGate::watch() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    stop_watch_.wait_for(lock, std::chrono::milliseconds(100));
    auto now = Clock::now();
    for (auto it = connections_.begin(); it != connections_.end();) {
      Connection& c = it->second;
      if (!c.cut && now - c.accepted > limits_.deadline) cut_locked(c);
      bool forget = !c.owned && now - c.accepted > limits_.deadline;
      it = forget ? connections_.erase(it) : std::next(it);
    }
  }
}

// Every connection is cut first, so no worker waits for a slow client to finish.
void ConnectionGate::shutdown() {
  {
    std::lock_guard lock(mutex_);
    if (stopping_ && workers_.empty()) return;
    stopping_ = true;
    for (auto& [id, c] : connections_) cut_locked(c);
  }
  tasks_ready_.notify_all();
  stop_watch_.notify_all();
  for (auto& w : workers_) {
    if (w.joinable()) w.join();
  }
  workers_.clear();
  if (watcher_.joinable()) watcher_.join();
  std::lock_guard lock(mutex_);
  connections_.clear();
}

}  // namespace arch::agent
