// Checkpoint: the pipeline validate → lock → [pre-dump] → freeze → capture rootfs → dump →
// commit → end, with the thaw-on-failure guarantee. Timings go into the manifest.
//
// Pre-copy layout: the pre-dump's images go into `images/parent/` (a real directory, not
// CRIU's usual `parent` symlink), and the final dump runs with `--parent-path parent`.
// CRIU links `images/parent` to the parent images only when that name is free, so the
// checkpoint stays a tree of plain files and directories (what the store's manifest
// accepts) and `runc restore --image-path images` finds the parent pages by itself.
#include "container/checkpoint.h"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/core.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <stop_token>
#include <thread>

#include "base/clock.h"
#include "base/file_util.h"
#include "base/host.h"
#include "base/process.h"
#include "container/container_network.h"
#include "container/deadline_plan.h"
#include "container/dump_progress.h"
#include "container/group_checkpoint.h"
#include "container/restore.h"
#include "container/rootfs_diff.h"
#include "container/staging_flush.h"
#include "container/tcp_policy.h"
#include "container/workdir_capture.h"
#include "criu/criu_errors.h"
#include "criu/criu_features.h"
#include "criu/file_locks.h"
#include "criu/lazy_pages.h"
#include "criu/page_receiver.h"
#include "criu/pages_at_rest.h"
#include "managed/shared_mode.h"
#include "managed/store_layout.h"
#include "runtime/oci_spec.h"
#include "runtime/runc_log.h"
#include "runtime/spec_digest.h"
#include "store/checkpoint_store.h"
#include "store/image_stream.h"
#include "store/manifest.h"
#include "version.h"

namespace arch {
namespace {

using Clock = std::chrono::steady_clock;

std::string first_line_of(const std::vector<std::string>& argv) {
  auto r = run_process(argv, {.stdin_fd = -1,
                              .stdout_fd = -1,
                              .stderr_fd = -1,
                              .timeout = std::chrono::seconds(10),
                              .cwd = {}});
  if (!r || !r->ok()) return "unknown";
  std::string text = r->out.empty() ? r->err : r->out;
  return text.substr(0, text.find('\n'));
}

std::string shell_quote(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& a : argv) {
    std::string quoted;
    for (char ch : a) quoted += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
    out += (out.empty() ? "'" : " '") + quoted + "'";
  }
  return out;
}

// Starts writeback of every file under `dir` without waiting for it: the disk writes the
// images while the commit hashes them, and the commit's fsyncs find most pages clean.
void start_writeback(int dirfd) {
  (void)walk_checkpoint_dir(dirfd, [](const CheckpointEntry& e) -> Result<void> {
    if (!S_ISREG(e.st.st_mode)) return {};
    int fd = ::openat(e.parent_fd, e.name.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return {};
    (void)::sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
    ::close(fd);
    return {};
  });
}

// Writes back what CRIU wrote so far, kPumpChunk at a time with at most two chunks in
// flight per file: the store always has work, and what is submitted but not yet written
// stays small (a stopped dump's staging is removed at once instead of after the store has
// taken every page queued for it: 300 MiB took 13 s on a 16 MB/s store). `done` holds, per
// file (inode), the offset up to which writeback was started; `written` grows by each chunk
// waited for (on the store).
constexpr off_t kPumpChunk = off_t{8} << 20;
void pump_writeback(int dirfd, std::map<ino_t, off_t>& done, const std::stop_token& stop,
                    std::atomic<uint64_t>& written) {
  (void)walk_checkpoint_dir(dirfd, [&](const CheckpointEntry& e) -> Result<void> {
    if (!S_ISREG(e.st.st_mode) || stop.stop_requested()) return {};
    off_t& from = done[e.st.st_ino];
    if (from >= e.st.st_size) return {};
    UniqueFd fd(::openat(e.parent_fd, e.name.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!fd) return {};
    while (from < e.st.st_size && !stop.stop_requested()) {
      off_t len = std::min(kPumpChunk, e.st.st_size - from);
      (void)::sync_file_range(fd.get(), from, len, SYNC_FILE_RANGE_WRITE);
      if (from >= kPumpChunk) {  // the chunk before this one must be on the store
        (void)::sync_file_range(fd.get(), from - kPumpChunk, kPumpChunk,
                                SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WAIT_AFTER);
        written.fetch_add(static_cast<uint64_t>(kPumpChunk));
      }
      from += len;
    }
    return {};
  });
}

// While CRIU writes the images, writes them back from a thread every 50 ms
// (pump_writeback()), so that the disk writes during the dump instead of after it (the
// kernel alone would wait until dirty_background_ratio of RAM is dirty: gigabytes).
// Stopped and joined by stop(). `written` counts the bytes it knows are on the store.
class WritebackPump {
 public:
  WritebackPump(const std::string& dir, std::atomic<uint64_t>& written) : written_(written) {
    auto fd = open_file(dir, O_RDONLY | O_DIRECTORY);
    if (!fd) return;
    dir_ = std::move(*fd);
    thread_ = std::jthread([this](std::stop_token stop) {
      while (!stop.stop_requested()) {
        std::unique_lock lock(mutex_);
        if (wake_.wait_for(lock, stop, std::chrono::milliseconds(50),
                           [&] { return stop.stop_requested(); })) {
          break;
        }
        lock.unlock();
        pump_writeback(dir_.get(), done_, stop, written_);
      }
    });
  }
  WritebackPump(const WritebackPump&) = delete;
  WritebackPump& operator=(const WritebackPump&) = delete;
  ~WritebackPump() { stop(); }
  void stop() {
    if (!thread_.joinable()) return;
    thread_.request_stop();
    thread_.join();
  }

 private:
  std::atomic<uint64_t>& written_;
  UniqueFd dir_;
  std::map<ino_t, off_t> done_;
  std::mutex mutex_;
  std::condition_variable_any wake_;
  std::jthread thread_;
};

// Puts every established TCP socket of the (frozen) tasks into repair mode, through a
// duplicate taken with pidfd_getfd: a socket closed in repair mode goes without a FIN or
// an RST (tcp_close → tcp_disconnect), which is how CRIU itself ends dumped connections.
// A group's members are ended this way after the group is committed, so the peers of
// connections between members are not told of the end of the other side, and nothing of
// the old sockets lingers (TIME_WAIT) where the restored ones come back. Best effort.
void silence_tcp_sockets(const std::vector<int>& pids) {
  for (int pid : pids) {
    auto pidfd = open_pidfd(pid);
    if (!pidfd) continue;
    std::string dir = fmt::format("/proc/{}/fd", pid);
    auto fds = open_file(dir, O_RDONLY | O_DIRECTORY);
    if (!fds) continue;
    auto names = list_directory(fds->get());
    if (!names) continue;
    for (const auto& name : *names) {
      char target[64] = {};
      ssize_t n = ::readlinkat(fds->get(), name.c_str(), target, sizeof target - 1);
      if (n <= 0 || std::string_view(target, static_cast<std::size_t>(n)).find("socket:") != 0)
        continue;
      int num = std::atoi(name.c_str());
      int fd = static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd->get(), num, 0));
      if (fd < 0) continue;
      UniqueFd dup(fd);
      int proto = 0;
      socklen_t len = sizeof proto;
      if (::getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &len) != 0 || proto != IPPROTO_TCP)
        continue;
      struct tcp_info info {};
      len = sizeof info;
      if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0 ||
          info.tcpi_state != TCP_ESTABLISHED)
        continue;
      int on = 1;
      (void)::setsockopt(fd, IPPROTO_TCP, TCP_REPAIR, &on, sizeof on);
    }
  }
}

// The pages of one dump received through ARCH's page receiver (criu/page_receiver.h): a
// listener on 127.0.0.1 admitting only the connection whose socket the CRIU of our own
// `runc checkpoint --image-path <images>` holds (dump_progress.h: dump_criu_pids), served
// on a thread of its own while runc runs.
class PagesReception {
 public:
  static Result<std::unique_ptr<PagesReception>> start(const std::string& images,
                                                       PageReceiverOptions options) {
    auto listener = PageReceiverListener::listen();
    if (!listener) return std::unexpected(listener.error());
    auto r = std::unique_ptr<PagesReception>(new PagesReception(std::move(*listener)));
    r->options_ = std::move(options);
    r->thread_ = std::jthread([rx = r.get(), images] { rx->run(images); });
    return r;
  }
  PagesReception(const PagesReception&) = delete;
  PagesReception& operator=(const PagesReception&) = delete;
  ~PagesReception() { (void)finish(); }
  [[nodiscard]] std::string address() const { return listener_.address(); }
  /// After runc returned: what was received (an error when CRIU never connected, or the
  /// stream was refused or incomplete).
  Result<PageReceiverResult> finish() {
    if (thread_.joinable()) {
      cancel_ = true;
      listener_.cancel();
      thread_.join();
    }
    return result_;
  }
  [[nodiscard]] uint64_t refused() const { return refused_; }

 private:
  explicit PagesReception(PageReceiverListener l) : listener_(std::move(l)) {}
  void run(const std::string& images) {
    auto admit = [&](int fd) {
      auto inode = peer_socket_inode(fd);
      if (!inode) return false;
      for (pid_t pid : dump_criu_pids(images))
        if (process_holds_socket(pid, *inode)) return true;
      return false;
    };
    auto conn = listener_.accept_admitted(admit, &refused_);
    if (!conn) {
      result_ = std::unexpected(conn.error());
    } else if (!*conn) {
      result_ = fail("page receiver: CRIU never connected");
    } else {
      result_ = receive_pages(conn->get(), options_, &cancel_);
      // Closed here: after a refusal CRIU's next send fails, and so does the dump.
    }
  }
  PageReceiverListener listener_;
  PageReceiverOptions options_;
  std::atomic<bool> cancel_{false};
  uint64_t refused_ = 0;
  Result<PageReceiverResult> result_ = std::unexpected(Error("page receiver: not run"));
  std::jthread thread_;
};

// The most page bytes a dump may send: the node's memory and swap (no container holds more).
uint64_t node_memory_cap() {
  struct sysinfo si {};
  if (::sysinfo(&si) != 0) return uint64_t{1} << 40;
  return (static_cast<uint64_t>(si.totalram) + si.totalswap) * si.mem_unit;
}

}  // namespace

// ------------------------------------------------------------------ ThawGuard

Result<ThawGuard> ThawGuard::arm(const std::vector<std::vector<std::string>>& resume_argvs) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return fail_errno("pipe2");
  UniqueFd read_end(fds[0]), write_end(fds[1]);
  // Each resume command is one positional parameter (any number of containers fits).
  std::vector<std::string> argv = {
      "/bin/sh", "-c",
      "t() { for c in \"$@\"; do eval \"$c\" 2>/dev/null; done; }; "
      "read -r line || { t \"$@\"; sleep 0.5; t \"$@\"; sleep 2; t \"$@\"; }",
      "arch-thaw-guard"};
  for (const auto& r : resume_argvs) argv.push_back(shell_quote(r));
  auto pid = spawn_detached(argv, read_end.get());
  if (!pid) return std::unexpected(pid.error().wrap("start the thaw guard"));
  ThawGuard guard;
  guard.pid_ = *pid;
  guard.write_end_ = std::move(write_end);
  return guard;
}

ThawGuard::ThawGuard(ThawGuard&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)), write_end_(std::move(other.write_end_)) {}

void ThawGuard::disarm() {
  if (pid_ < 0) return;
  (void)write_all(write_end_.get(), "done\n");
  write_end_.reset();
  int status = 0;
  retry_eintr([&] { return ::waitpid(pid_, &status, 0); });
  pid_ = -1;
}

// ------------------------------------------------------------------ ContainerCheckpoint

struct ContainerCheckpoint::State {
  ContainerRecord c;
  const NodeConfig* config = nullptr;
  std::string runc_path;
  CheckpointOptions options;
  CheckpointStore store;
  std::optional<KeyLock> lock;
  std::shared_ptr<const Keyring> keyring;  // the store's: seals encrypted pages too
  RuncClient runc;
  RuncState state;
  std::optional<Staging> staging;
  std::optional<ThawGuard> guard;
  bool frozen = false;
  bool pre_copied = false;
  std::string pre_copy = "off";
  std::vector<std::string> notes;
  SpecDigest spec;  ///< Of the bundle's config.json: what a restore must match.
  std::map<std::string, double> timings;
  RootfsDiffStats rootfs_stats;  // what the capture wrote: restore stops at these counts
  nlohmann::json workdir;        // extra.workdir: the work directory's capture, if any
  TcpPolicy tcp_policy = TcpPolicy::kAuto;
  std::optional<NetworkRecord> network;  // the container's network namespace (after freeze)
  std::vector<TcpEndpoint> tcp;          // its TCP connections (dumped with it)
  std::vector<std::string> criu_lines;   // further CRIU config lines (network, TCP)
  std::vector<HeldLock> locks;           // held at the dump: restore checks they are held again
  bool ended_by_dump = false;            // CRIU ended the tasks (connections kept silent)
  std::string staged;                    // a group member's committed generation (path)
  std::string staged_mac;                // and its seal's MAC
  Clock::time_point total_start = Clock::now();
  // stop() from another thread (finalize's watcher): see ContainerCheckpoint::stop().
  mutable std::mutex stop_mutex;
  std::string stop_reason;    // non-empty once stop() was accepted
  std::string staging_dir;    // staging->path(), readable from other threads
  std::string dumping_into;   // the images directory while CRIU may be ended, else ""
  bool stop_refused = false;  // the dump cannot be undone (network lock, ended by CRIU)
  bool committing = false;    // past the point of no return
  std::atomic<bool> stop_asked{false};
  // Bytes of the staging known to be on the store: by the writeback pump during the dump,
  // and by the flush after it (which walks every file again from its start, passing at
  // once over what the pump wrote): the larger of the two.
  std::atomic<uint64_t> pumped{0};
  std::atomic<uint64_t> written_back{0};
  bool flushing = false;                // CRIU is done; its images are being written to the store
  std::atomic<bool> criu_ended{false};  // stop() ended the dump's CRIU
  // [checkpoint] pages_at_rest other than plain: what the page receiver wrote (the dump's
  // pagemap and pages images) and the stream id of encrypted pages.
  std::optional<PageReceiverResult> received;
  std::string pages_stream_id;
  UniqueFd images_dir;

  State(const ContainerRecord& rec, const NodeConfig& cfg, const std::string& runc_bin,
        const CheckpointOptions& opts, std::shared_ptr<const Keyring> keys)
      : c(rec),
        config(&cfg),
        runc_path(runc_bin),
        options(opts),
        store(rec.store, cfg.keep, rec.store_root, keys),
        keyring(std::move(keys)),
        runc(runc_bin, rec.runc_root, cfg.criu) {
    if (options.rootfs_zstd_level < 0)
      options.rootfs_zstd_level = cfg.checkpoint.rootfs_zstd_level();
    if (options.zstd_threads < 0) options.zstd_threads = cfg.checkpoint.zstd_threads;
  }

  Result<void> ensure_staging() {
    if (staging) return {};
    auto s = store.begin(*lock);
    if (!s) return std::unexpected(s.error().wrap("start a checkpoint"));
    staging.emplace(std::move(*s));
    std::lock_guard held(stop_mutex);
    staging_dir = staging->path();
    return {};
  }

  // A checkpoint given up by stop(): nothing of it stays in the store, the container runs on.
  std::unexpected<Error> stopped_now() {
    // Thawed first: removing the staging waits for the writes already submitted. runc may
    // have thawed it already when its CRIU ended: then it runs, which is what counts.
    std::string thawed = thaw();
    if (auto st = runc.state(c.id); st && st->status == "running") {
      thawed = " (container running)";
    }
    staging.reset();
    {
      std::lock_guard held(stop_mutex);
      staging_dir.clear();
    }
    std::string reason;
    {
      std::lock_guard held(stop_mutex);
      reason = stop_reason;
    }
    return std::unexpected(
        Error(ErrorKind::kTimeout,
              std::string(flushing ? "stopped while its images were written to the store: "
                                   : "stopped: ") +
                  reason + (criu_ended.load() ? "; its CRIU was ended" : "") +
                  "; its staging was removed" + thawed));
  }

  // The container must keep running: thaw it (it is frozen since the pause). Returns what
  // happened, for the error ("" when it was not frozen).
  std::string thaw() {
    if (!frozen) return {};
    auto thawed = runc.resume(c.id);
    frozen = false;
    return thawed ? " (container thawed and still running)"
                  : " (and thawing failed: " + thawed.error().message() + ")";
  }
  std::unexpected<Error> thaw_after(const Error& e) {
    if (!frozen) return std::unexpected(e);
    return std::unexpected(Error(e.message() + thaw()));
  }

  // Ends the frozen container: SIGKILL to every one of its tasks while the cgroup is
  // frozen, so that none runs again after the dump (each takes the signal at the thaw,
  // before its own code). runc kill signals the init only; the other tasks would die only
  // when the kernel empties the pid namespace after the init's death, and until then they
  // run: a write to a volume or a message sent in that window would happen twice, once
  // now and once more after the restore. Each task is held by a pidfd and signalled only
  // if it is still in the container when the list is read again (no recycled pid).
  Result<void> kill_all_frozen() {
    auto listed = runc.pids(c.id);
    if (!listed) return std::unexpected(listed.error().wrap("list the container's tasks"));
    std::vector<std::pair<int, UniqueFd>> held;
    for (int pid : *listed) {
      if (auto fd = open_pidfd(pid)) held.emplace_back(pid, std::move(*fd));
    }
    auto again = runc.pids(c.id);
    if (!again) return std::unexpected(again.error().wrap("list the container's tasks"));
    for (const auto& [pid, fd] : held) {
      if (std::find(again->begin(), again->end(), pid) == again->end()) continue;
      if (auto sent = signal_pidfd(fd.get(), SIGKILL); !sent) {
        return std::unexpected(sent.error().wrap("end task " + std::to_string(pid)));
      }
    }
    // And through runc, which records how its container ended.
    return runc.kill(c.id, "KILL");
  }

  // The file locks the container's tasks hold, recorded while they are frozen.
  Result<void> record_locks() {
    auto pids = runc.pids(c.id);
    if (!pids) return std::unexpected(pids.error().wrap("list the container's tasks"));
    locks = locks_held_by(*pids);
    return {};
  }

  // A failed dump: the container runs on, CRIU's log is kept in the store as failed-<time>
  // (bounded), and the error's first line says in one sentence what happened and what to
  // do; CRIU's own lines follow it.
  std::unexpected<Error> dump_failed(const Error& e) {
    std::string thaw_note = thaw();
    std::string dump_log, pre_dump_log;
    if (staging) {
      if (auto t = read_file(staging->path() + "/criu/dump.log", 256 << 20)) dump_log = *t;
      if (auto t = read_file(staging->path() + "/criu-pre-dump/pre-dump.log", 256 << 20))
        pre_dump_log = *t;
    }
    auto why = explain_criu_log(dump_log);
    if (!why) why = explain_criu_log(e.message(), /*error_lines_only=*/false);
    std::string sentence =
        why ? std::string(why->sentence)
            : "CRIU could not dump the container, for a reason ARCH does not know: see CRIU's "
              "lines (archctl checkpoint inspect --verbose).";
    std::string reason = sentence;
    if (why) reason += "\nCRIU: " + why->line;
    for (const auto& line : criu_error_lines(dump_log, 20)) reason += "\n  " + line;
    reason += "\nrunc: " + first_line(e);
    std::string kept_note;
    if (staging) {
      std::vector<std::pair<std::string, std::string>> files;
      if (!dump_log.empty()) files.emplace_back("dump.log", criu_log_tail(dump_log));
      if (!pre_dump_log.empty()) files.emplace_back("pre-dump.log", criu_log_tail(pre_dump_log));
      auto kept = store.keep_failed_dump(std::move(*staging), reason, files,
                                         config->checkpoint.failed_dumps_kept, *lock);
      staging.reset();
      if (!kept) {
        kept_note = "; CRIU's log not kept: " + kept.error().message();
      } else if (!kept->empty()) {
        kept_note = "; CRIU's log kept in " + *kept;
      }
    }
    // The first line is the sentence (what archctl shows); CRIU's own lines follow it
    // (archctl --verbose, the node log, and reason.txt beside the kept log).
    std::string line = why ? "\nCRIU: " + why->line.substr(0, 300) : "";
    return std::unexpected(Error(
        e.kind(), "dump failed: " + sentence + kept_note + thaw_note + line + "\n" + e.message()));
  }

  // The CRIU options runc cannot pass, as a CRIU config file in the checkpoint's CRIU work
  // directory (kept with its logs: the record of how the dump was made). Empty: none.
  std::string criu_config(const std::string& work) const {
    std::string method = network_lock_method();
    if (method.empty()) method = "skip";  // no connection to lock: CRIU need not run iptables
    std::string text;
    if (!method.empty() && method != "iptables") text += "network-lock " + method + "\n";
    // The node's ghost-file limit (CRIU's own, 1 MiB, refuses common deleted files).
    text += fmt::format("ghost-limit {}\n", config->checkpoint.ghost_limit);
    for (const auto& line : criu_lines) text += line + "\n";
    if (::mkdir(work.c_str(), 0700) != 0 && errno != EEXIST) return {};
    std::string path = work + "/arch-criu.conf";
    auto fd = open_file(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (!fd || !write_all(fd->get(), text)) return {};
    return path;
  }

  // Frozen: the container's network namespace (so the restore can give it back and check
  // it) and its TCP connections (dumped with it, or refused with ARCH_TCP=fail).
  Result<void> inspect_network() {
    auto net = record_container_network(state.pid, c.bundle);
    if (!net) return std::unexpected(net.error().wrap("record the container's network"));
    auto line = dump_criu_line(*net, state.pid);
    if (!line) return std::unexpected(line.error());
    if (!line->empty()) criu_lines.push_back(*line);
    network = std::move(*net);
    auto pids = runc.pids(c.id);
    if (!pids) return std::unexpected(pids.error());
    auto conns = container_tcp_connections(*pids);
    if (!conns) return std::unexpected(conns.error());
    tcp = std::move(*conns);
    if (!tcp.empty() && tcp_policy == TcpPolicy::kFail) {
      return fail(fmt::format(
          "the container holds {} established TCP connection(s) (e.g. {} -> {}) and its TCP "
          "policy is fail (ARCH_TCP or [checkpoint] tcp): not checkpointed",
          tcp.size(), tcp.front().local, tcp.front().remote));
    }
    return {};
  }

  // Frozen: shared mode's work directory (its root-only bind), so that a restore from this
  // generation finds it as the job left it here (container/workdir_capture.h).
  Result<void> capture_workdir() {
    if (c.workdir.empty() || config->checkpoint.workdir_capture == 0) return {};
    auto start = Clock::now();
    std::string bind = workdir_mount_path(config->state_dir, c.runc_root, c.id);
    auto record = arch::capture_workdir(bind, config->checkpoint.workdir_capture,
                                        staging->path() + "/" + kWorkdirFile);
    if (!record) return std::unexpected(record.error());
    if (!record->value("captured", false)) {
      notes.push_back("work directory not captured: " + record->value("reason", std::string()) +
                      " ([checkpoint] workdir_capture); a restore leaves it as it is then");
    }
    workdir = std::move(*record);
    timings["workdir"] = ms_since(start);
    return {};
  }

  // Everything taken from the frozen container before the dump: staging, network and TCP,
  // file locks, the writable layer, the work directory, the spec.
  Result<void> capture_frozen() {
    if (auto ok = ensure_staging(); !ok) return ok;
    if (auto ok = inspect_network(); !ok) return ok;
    if (auto ok = record_locks(); !ok) return ok;
    if (auto ok = capture_rootfs(); !ok) return ok;
    if (auto ok = capture_workdir(); !ok) return ok;
    save_spec();
    return {};
  }

  // The bundle's config.json as `spec.json` (sealed with the rest): what `archctl checkpoint
  // export` hands on to checkpointctl and other tools as Podman's spec.dump. Not needed to
  // restore (the bundle there has its own spec): a note, no error.
  void save_spec() {
    auto text = read_file(c.bundle + "/config.json", 16 << 20);
    if (!text) {
      notes.push_back("spec.json not saved: " + first_line(text.error()));
      return;
    }
    if (auto ok = write_file_atomic(staging->path() + "/spec.json", *text, 0600); !ok) {
      notes.push_back("spec.json not saved: " + first_line(ok.error()));
    }
  }

  Result<void> capture_rootfs() {
    auto start = Clock::now();
    std::string rootfs = state.rootfs.empty() ? c.bundle + "/rootfs" : state.rootfs;
    auto upper = overlay_upperdir(rootfs);
    if (!upper) return std::unexpected(upper.error().wrap("find the writable layer"));
    // The name restore opens; a zstd stream inside is recognised by its magic number.
    std::string path = staging->path() + "/rootfs-diff.tar";
    auto tar = open_file(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (!tar) return std::unexpected(tar.error());
    RootfsCaptureOptions capture;
    capture.zstd_level = options.rootfs_zstd_level;
    capture.zstd_threads = options.zstd_threads;
    auto stats = capture_rootfs_diff(*upper, tar->get(), capture);
    if (!stats && capture.zstd_level > 0) {
      // Saving the container matters more than its size: once more, uncompressed.
      notes.push_back("rootfs diff written uncompressed: zstd failed (" +
                      first_line(stats.error()) + ")");
      options.rootfs_zstd_level = 0;
      tar = open_file(path, O_WRONLY | O_TRUNC, 0600);
      if (!tar) return std::unexpected(tar.error());
      stats = capture_rootfs_diff(*upper, tar->get(), RootfsCaptureOptions{});
    }
    if (!stats) return std::unexpected(stats.error().wrap("capture the rootfs diff"));
    rootfs_stats = std::move(*stats);
    timings["rootfs"] = ms_since(start);
    return {};
  }

  // Connections that may continue in place after the restore (the namespace outlives the
  // container: a pod's, or the host's) are ended by CRIU itself: it keeps their sockets in
  // repair mode and the connections' packets dropped (its network lock) from the dump until
  // the restore, so the kernel neither answers the peer (an ACK for data the checkpoint
  // does not hold) nor closes the connection (FIN or RST) when the tasks die. Ending them
  // later ourselves would do both. The price: if the commit then fails, the container is
  // already gone (the error says so).
  [[nodiscard]] bool connections_continue_in_place() const {
    if (tcp.empty() || options.leave_running || !network || network->mode == "own") return false;
    // A group member stays in place until the whole group is committed (or thawed).
    if (!options.group.empty() || options.migration) return false;
    return tcp_policy == TcpPolicy::kAuto || tcp_policy == TcpPolicy::kRestore;
  }

  // The network lock CRIU uses for the dump ("" when none).
  [[nodiscard]] std::string network_lock_method() const {
    std::string method = config->checkpoint.network_lock;
    if (!tcp.empty() && method == "skip") method = "iptables";  // connections: lock
    return method == "skip" ? std::string() : method;
  }

  Result<void> dump() {
    auto start = Clock::now();
    std::string images = staging->path() + "/images";
    // --file-locks: locks are dumped and taken again at restore (which checks they are).
    std::vector<std::string> base = {"--file-locks"};
    ended_by_dump = connections_continue_in_place();
    if (!ended_by_dump) base.push_back("--leave-running");
    if (!tcp.empty()) base.push_back("--tcp-established");
    std::vector<std::string> extra = base;
    if (pre_copied) extra.insert(extra.end(), {"--parent-path", "parent"});
    WritebackPump pump(staging->path(), pumped);
    std::string work = staging->path() + "/criu";
    {
      std::lock_guard held(stop_mutex);
      stop_refused = !network_lock_method().empty() || ended_by_dump;
      if (!stop_refused) dumping_into = images;
    }
    std::unique_ptr<PagesReception> reception;
    if (config->checkpoint.pages_at_rest != "plain") {
      if (pre_copied) {
        notes.push_back("pages_at_rest " + config->checkpoint.pages_at_rest +
                        " not used: the dump on top of a pre-dump writes its pages itself");
      } else {
        auto rx = receive_pages_of(images);
        if (!rx) return std::unexpected(rx.error().wrap("start the page receiver"));
        reception = std::move(*rx);
        extra.insert(extra.end(), {"--page-server", reception->address()});
      }
    }
    auto dumped = runc.checkpoint(c.id, images, work, extra, criu_config(work));
    if (reception) {
      // The pages are complete only when CRIU flushed them and we acknowledged it.
      auto got = reception->finish();
      if (reception->refused() > 0) {
        notes.push_back(
            fmt::format("page receiver: {} connection(s) not from this dump's CRIU closed unread",
                        reception->refused()));
      }
      if (!got && dumped) dumped = std::unexpected(got.error());
      if (!got && !dumped) dumped = std::unexpected(dumped.error().wrap(got.error().message()));
      if (got) received = std::move(*got);
    }
    if (stop_asked.load()) {
      std::lock_guard held(stop_mutex);
      dumping_into.clear();
      return fail("stopped");
    }
    if (!dumped && pre_copied) {
      // The incremental dump failed: one plain dump more, from scratch, before giving up.
      notes.push_back("dump on top of the pre-dump failed (" + first_line(dumped.error()) +
                      "); dumped again without it");
      pre_copy = "failed";
      pre_copied = false;
      (void)remove_directory_contents(images);
      (void)remove_directory_contents(staging->path() + "/criu");
      dumped = runc.checkpoint(c.id, images, work, base, criu_config(work));
    }
    {
      std::lock_guard held(stop_mutex);
      dumping_into.clear();
    }
    if (!dumped) return dumped;
    timings["dump"] = ms_since(start);
    return {};
  }

  // The page receiver of this dump: its pages stored plain (streamed) or sealed chunks
  // (encrypted), at most the node's memory.
  Result<std::unique_ptr<PagesReception>> receive_pages_of(const std::string& images) {
    if (::mkdir(images.c_str(), 0700) != 0 && errno != EEXIST) return fail_errno("mkdir " + images);
    auto dir = open_file(images, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    if (!dir) return std::unexpected(dir.error());
    images_dir = std::move(*dir);
    PageReceiverOptions o;
    o.images_dirfd = images_dir.get();
    o.max_bytes = node_memory_cap();
    if (config->checkpoint.pages_at_rest == "encrypted") {
      o.key = keyring ? keyring->active() : nullptr;
      if (o.key == nullptr) return fail("encrypted pages: no active node key");
      auto id = new_stream_id();
      if (!id) return std::unexpected(id.error());
      pages_stream_id = *id;
      o.stream_id = *id;
      auto mode = parse_stream_compression(config->jobs.stream_compression);
      if (!mode) return std::unexpected(mode.error());
      o.compression = {.mode = *mode,
                       .level = config->jobs.stream_compression_level,
                       .store_bps = load_store_rates(config->state_dir, c.store).single_bps,
                       .workers = 0};
    }
    return PagesReception::start(images, std::move(o));
  }

  static std::string first_line(const Error& e) {
    const std::string& m = e.message();
    return m.substr(0, m.find('\n'));
  }

  Manifest manifest() const {
    Manifest m;
    m.ns = c.owner;  // The manifest's "namespace" names the owner.
    m.key = c.key;
    m.container_id = c.id;
    m.node = host_name();
    m.created = format_utc(static_cast<long>(std::time(nullptr)));
    // Asked once per process: finalize checkpoints many containers with the same tools.
    static const ToolVersions versions = tool_versions(*config, runc_path);
    m.versions = {kVersion, versions.criu, versions.runc, versions.kernel};
    m.timings_ms = timings;
    m.timings_ms["total_before_commit"] = ms_since(total_start);
    m.spec = {spec.digest, spec.fields};
    m.extra = {{"rootfs_diff",
                {{"file", "rootfs-diff.tar"},
                 {"compression", options.rootfs_zstd_level > 0 ? "zstd" : "none"},
                 {"bytes", rootfs_stats.bytes},
                 {"entries", rootfs_stats.entries}}},
               {"pre_copy", pre_copy},
               {"network_lock", config->checkpoint.network_lock},
               {"ghost_limit", config->checkpoint.ghost_limit},
               {"file_locks", locks_to_json(locks)}};
    if (network) m.extra["network"] = to_json(*network);
    if (!workdir.is_null()) m.extra["workdir"] = workdir;
    nlohmann::json conns = nlohmann::json::array();
    for (const auto& t : tcp) conns.push_back({{"local", t.local}, {"remote", t.remote}});
    m.extra["tcp"] = {{"policy", std::string(tcp_policy_name(tcp_policy))},
                      {"dumped", !tcp.empty()},
                      {"connections", conns},
                      {"lock", network_lock_method()},
                      {"ended_by_dump", ended_by_dump}};
    if (options.rootfs_zstd_level > 0) {
      m.extra["rootfs_diff"]["zstd_level"] = options.rootfs_zstd_level;
    }
    if (!options.group.empty()) {
      m.extra["group"] = {{"name", options.group}, {"generation", options.group_generation}};
    }
    if (received) {
      // Hashed as they were received: the commit does not read them again.
      add_received_files(m, *received);
      if (!pages_stream_id.empty()) {
        m.encryption = stream_encryption(pages_stream_id);
        m.extra["pages_at_rest"] = pages_at_rest_record(received->pages);
      } else {
        m.extra["pages_at_rest"] = {{"mode", "streamed"}};
      }
    }
    return m;
  }
};

ContainerCheckpoint::ContainerCheckpoint(std::unique_ptr<State> state) : s_(std::move(state)) {}
ContainerCheckpoint::ContainerCheckpoint(ContainerCheckpoint&&) noexcept = default;
ContainerCheckpoint& ContainerCheckpoint::operator=(ContainerCheckpoint&& other) noexcept {
  if (this != &other) {
    abandon();
    s_ = std::move(other.s_);
  }
  return *this;
}
ContainerCheckpoint::~ContainerCheckpoint() {
  abandon();
}

const ContainerRecord& ContainerCheckpoint::container() const {
  return s_->c;
}

std::vector<std::string> ContainerCheckpoint::resume_argv() const {
  return s_->runc.resume_argv(s_->c.id);
}

Result<ContainerCheckpoint> ContainerCheckpoint::begin(const ContainerRecord& c,
                                                       const NodeConfig& config,
                                                       const std::string& runc,
                                                       const CheckpointOptions& options,
                                                       const RuncState* known) {
  for (auto [kind, name] :
       {std::pair{"container id", &c.id}, {"namespace", &c.ns}, {"key", &c.key}}) {
    if (auto ok = validate_name(kind, *name); !ok) return std::unexpected(ok.error());
  }
  // No key, no checkpoint: an unsealed one would never be restored.
  auto keys = load_node_keyring(config);
  if (!keys) return std::unexpected(keys.error().wrap("checkpoint cannot be sealed"));
  // The privileges the container runs with, bound into the checkpoint.
  auto spec = bundle_spec_digest(c.bundle);
  if (!spec) return std::unexpected(spec.error().wrap("spec digest"));
  if (auto own = tenant_criu_config(c.bundle); !own) return std::unexpected(own.error());
  auto s = std::make_unique<State>(c, config, runc, options,
                                   std::make_shared<const Keyring>(std::move(*keys)));
  s->spec = std::move(*spec);
  // The TCP policy, strictly one of its names (the value never reaches CRIU as text).
  auto env = read_arch_env(c.bundle);
  if (!env) return std::unexpected(env.error());
  // A group member alone would commit a generation of its own (and prune its group's):
  // members are checkpointed only as their group (container/group_checkpoint.h).
  if (std::string_view group = env->get("ARCH_GROUP"); !group.empty() && options.group.empty()) {
    return std::unexpected(
        Error("container " + c.ns + "/" + c.id + " is a member of group " + std::string(group) +
                  ": checkpoint the group (archctl group checkpoint " + std::string(group) + ")",
              EPERM));
  }
  if (options.group.empty()) {
    // Likewise a member of its pod's group (group_checkpoint.h, pod groups).
    if (auto pod = effective_group(c, config); pod && is_pod_group(*pod)) {
      return std::unexpected(Error("container " + c.ns + "/" + c.id + " is a member of group " +
                                       *pod + ": checkpoint the group (archctl group checkpoint " +
                                       *pod + ")",
                                   EPERM));
    }
  }
  auto policy = container_tcp_policy(config.checkpoint.tcp, env->get("ARCH_TCP"));
  if (!policy) return std::unexpected(policy.error().wrap("container " + c.ns + "/" + c.id));
  s->tcp_policy = *policy;
  auto lock = s->store.lock(c.owner, c.key, std::chrono::seconds(options.lock_timeout_s));
  if (!lock) return std::unexpected(lock.error().wrap("lock " + c.owner + "/" + c.key));
  s->lock.emplace(std::move(*lock));
  (void)s->store.cleanup_stale(*s->lock);
  if (known != nullptr) {
    s->state = *known;
  } else {
    auto state = s->runc.state(c.id);
    if (!state) return std::unexpected(state.error());
    s->state = std::move(*state);
  }
  if (s->state.status != "running") {
    return fail("container " + c.ns + "/" + c.id + " is " + s->state.status + ", not running");
  }
  // A lazily restored container whose pages are still being served: CRIU dumps only the
  // pages present, so the rest would come back as zeros. Wait until all are in.
  if (auto lazy = wait_for_lazy_pages(c.bundle, std::chrono::seconds(60)); !lazy) {
    return std::unexpected(lazy.error().wrap("container " + c.ns + "/" + c.id));
  }
  return ContainerCheckpoint(std::move(s));
}

uint64_t ContainerCheckpoint::predicted_bytes() const {
  const State& s = *s_;
  std::string rootfs = s.state.rootfs.empty() ? s.c.bundle + "/rootfs" : s.state.rootfs;
  auto upper = overlay_upperdir(rootfs);
  return predict_checkpoint_bytes(s.state.pid, upper ? *upper : std::string());
}

void ContainerCheckpoint::pre_copy() {
  State& s = *s_;
  if (!s.options.pre_copy || s.frozen) return;
  auto feature = criu_dirty_tracking(s.config->criu);
  if (!feature.supported) {
    s.pre_copy = "unavailable";
    s.notes.push_back("pre-copy not used: the kernel has no soft-dirty page tracking (criu: " +
                      feature.reason + "); plain dump");
    return;
  }
  auto start = Clock::now();
  if (auto ok = s.ensure_staging(); !ok) {
    s.pre_copy = "failed";
    s.notes.push_back("pre-copy not used: " + ok.error().message() + "; plain dump");
    return;
  }
  std::string parent = s.staging->path() + "/images/parent";
  std::string work = s.staging->path() + "/criu-pre-dump";
  auto dumped = s.runc.checkpoint(s.c.id, parent, work, {"--pre-dump"}, s.criu_config(work));
  if (!dumped) {
    s.pre_copy = "failed";
    s.notes.push_back("pre-dump failed (" + State::first_line(dumped.error()) + "); plain dump");
    (void)remove_directory_contents(s.staging->path() + "/images");
    return;
  }
  s.pre_copied = true;
  s.pre_copy = "used";
  s.timings["pre_dump"] = ms_since(start);
}

// g++ 12 misreads the inlined destructor of Result<ThawGuard> below as freeing a non-heap
// pointer (-Wfree-nonheap-object, a known false positive with std::expected).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wfree-nonheap-object"
Result<void> ContainerCheckpoint::freeze(bool own_guard) {
  State& s = *s_;
  if (s.frozen) return {};
  auto start = Clock::now();
  if (own_guard) {
    auto guard = ThawGuard::arm({s.runc.resume_argv(s.c.id)});
    if (!guard) return std::unexpected(guard.error());
    s.guard.emplace(std::move(*guard));
  }
  if (auto paused = s.runc.pause(s.c.id); !paused) return std::unexpected(paused.error());
  s.frozen = true;
  s.timings["freeze"] = ms_since(start);
  return {};
}
#pragma GCC diagnostic pop

Result<CheckpointOutcome> ContainerCheckpoint::finish() {
  State& s = *s_;
  if (auto frozen = freeze(); !frozen) return std::unexpected(frozen.error());
  if (auto ok = s.capture_frozen(); !ok) return s.thaw_after(ok.error());
  if (s.stop_asked.load()) return s.stopped_now();
  if (auto ok = s.dump(); !ok) {
    return s.stop_asked.load() ? s.stopped_now() : s.dump_failed(ok.error());
  }
  if (s.stop_asked.load() && !s.ended_by_dump) return s.stopped_now();
  if (s.ended_by_dump) {
    s.frozen = false;  // CRIU ended the tasks; runc removed the container
    if (s.guard) s.guard->disarm();
    s.notes.push_back(
        "ended by CRIU at the dump: its TCP connections stay silent and locked "
        "until the restore");
  }

  auto start = Clock::now();
  if (s.ended_by_dump) {
    start_writeback(s.staging->dirfd());  // cannot be stopped: all at once
  } else {
    // Onto the store before the commit, in steps a stop can interrupt: the deadline covers
    // the flush, where a dump that went to the page cache spends its time.
    s.flushing = true;
    auto flushed = flush_staging(
        s.staging->dirfd(), [&] { return s.stop_asked.load(); }, &s.written_back);
    if (flushed.stopped) return s.stopped_now();
  }
  bool give_up = false;
  {
    std::lock_guard held(s.stop_mutex);
    give_up = s.stop_asked.load() && !s.ended_by_dump;
    s.committing = true;  // from here stop() is refused
  }
  if (give_up) return s.stopped_now();
  auto committed = s.store.commit(std::move(*s.staging), s.manifest(), *s.lock);
  s.staging.reset();
  if (!committed) {
    if (s.ended_by_dump) {
      return std::unexpected(committed.error().wrap(
          "commit (the container had already been ended by CRIU at the dump, to keep its TCP "
          "connections for the restore: it is not running)"));
    }
    return s.thaw_after(committed.error().wrap("commit"));
  }
  s.timings["commit"] = ms_since(start);

  // Committed: only now does the container end (or go on, with leave_running). SIGKILL is
  // queued to every task while frozen and taken at the thaw, before any of its code runs
  // again, so nothing happens after the state the checkpoint holds.
  start = Clock::now();
  if (s.ended_by_dump) {
    // Nothing left to end.
  } else if (!s.options.leave_running) {
    if (auto killed = s.kill_all_frozen(); !killed) {
      (void)s.runc.resume(s.c.id);
      s.frozen = false;
      return fail("checkpoint committed at " + *committed +
                  " but ending the container failed: " + killed.error().message());
    }
  }
  if (!s.ended_by_dump) (void)s.runc.resume(s.c.id);
  s.frozen = false;
  if (s.guard) s.guard->disarm();
  s.timings["end"] = ms_since(start);
  s.timings["total"] = ms_since(s.total_start);

  CheckpointOutcome out;
  out.path = *committed;
  out.bytes = committed_checkpoint_bytes(out.path);
  // Small checkpoints measure fixed costs (runc, CRIU start-up), not the store.
  if (s.options.record_rate && out.bytes >= kMinRateSampleBytes) {
    double ms = s.timings["rootfs"] + s.timings["dump"] + s.timings["commit"];
    if (ms > 0) {
      (void)record_store_rates(s.config->state_dir, s.c.store,
                               static_cast<double>(out.bytes) * 1000 / ms, 0);
    }
  }
  out.timings_ms = s.timings;
  out.notes = s.notes;
  out.pre_copy = s.pre_copy;
  return out;
}

int lock_timeout_before(std::chrono::steady_clock::time_point deadline) {
  auto secs =
      std::chrono::duration_cast<std::chrono::seconds>(deadline - std::chrono::steady_clock::now());
  return static_cast<int>(std::clamp<long>(secs.count(), 1, 60));
}

bool ContainerCheckpoint::stop(const std::string& reason) {
  if (!s_) return false;
  State& s = *s_;
  std::string images;
  {
    std::lock_guard held(s.stop_mutex);
    if (s.committing || s.stop_refused || s.stop_asked.load()) return false;
    s.stop_reason = reason;
    s.stop_asked = true;
    images = s.dumping_into;
  }
  // CRIU runs: end it (its parasite returns the tasks as they were; finish() thaws them).
  if (!images.empty()) {
    if (auto ended = end_dump_criu(images); ended && *ended > 0) s.criu_ended = true;
  }
  return true;
}

bool ContainerCheckpoint::stopped() const {
  return s_ && s_->stop_asked.load();
}

uint64_t ContainerCheckpoint::written_back_bytes() const {
  if (!s_) return 0;
  return std::max(s_->pumped.load(), s_->written_back.load());
}

std::string ContainerCheckpoint::staging_path() const {
  if (!s_) return {};
  std::lock_guard held(s_->stop_mutex);
  return s_->staging_dir;
}

void ContainerCheckpoint::abandon() {
  if (!s_) return;
  if (s_->frozen) {
    (void)s_->runc.resume(s_->c.id);
    s_->frozen = false;
  }
  if (s_->guard) s_->guard->disarm();
  s_->staging.reset();
}

// ------------------------------------------------------------------ group members

Result<std::string> ContainerCheckpoint::stage_group_member() {
  State& s = *s_;
  if (s.options.group.empty() && !s.options.migration) return fail("not a group member");
  if (auto frozen = freeze(false); !frozen) return std::unexpected(frozen.error());
  if (auto ok = s.capture_frozen(); !ok) return s.thaw_after(ok.error());
  // Stopped (the group's deadline): said as such, not as a CRIU failure, as in finish().
  if (s.stop_asked.load()) return s.stopped_now();
  if (auto ok = s.dump(); !ok) {
    return s.stop_asked.load() ? s.stopped_now() : s.dump_failed(ok.error());
  }
  if (s.stop_asked.load()) return s.stopped_now();
  auto start = Clock::now();
  start_writeback(s.staging->dirfd());
  auto committed = s.store.commit_unpruned(std::move(*s.staging), s.manifest(), *s.lock);
  s.staging.reset();
  if (!committed) return s.thaw_after(committed.error().wrap("commit"));
  s.timings["commit"] = ms_since(start);
  s.staged = *committed;
  std::string name = s.staged.substr(s.staged.rfind('/') + 1);
  auto m = s.store.read_verified(s.c.owner, s.c.key, name, /*check_files=*/false);
  if (!m) {
    retract_group_member();
    return std::unexpected(m.error().wrap("read back " + s.staged));
  }
  s.staged_mac = m->seal.mac;
  return s.staged;
}

std::string ContainerCheckpoint::staged_seal_mac() const {
  return s_->staged_mac;
}

Result<CheckpointOutcome> ContainerCheckpoint::end_group_member(
    const std::vector<std::string>& keep_generations) {
  State& s = *s_;
  auto start = Clock::now();
  Result<void> killed;
  if (!s.options.leave_running) {
    if (auto pids = s.runc.pids(s.c.id); pids) silence_tcp_sockets(*pids);
    killed = s.kill_all_frozen();
  }
  (void)s.runc.resume(s.c.id);
  s.frozen = false;
  s.timings["end"] = ms_since(start);
  s.timings["total"] = ms_since(s.total_start);
  // Member generations of group generations that never completed (a writer that died
  // between its members' commits and the record) are never restored: removed here.
  if (auto names = s.store.committed_names(s.c.owner, s.c.key)) {
    for (const auto& name : *names) {
      auto m = s.store.read_verified(s.c.owner, s.c.key, name, false);
      if (!m || !m->extra.is_object() || !m->extra.contains("group")) continue;
      std::string gen = m->extra["group"].value("generation", "");
      if (std::find(keep_generations.begin(), keep_generations.end(), gen) ==
          keep_generations.end()) {
        (void)s.store.remove_one(s.lock->path() + "/" + name, *s.lock);
      }
    }
  }
  s.store.prune_generations(*s.lock);
  if (s.guard) s.guard->disarm();
  if (!killed) {
    return fail("group checkpoint committed at " + s.staged +
                " but ending the container failed: " + killed.error().message());
  }
  CheckpointOutcome out;
  out.path = s.staged;
  out.bytes = committed_checkpoint_bytes(out.path);
  out.timings_ms = s.timings;
  out.notes = s.notes;
  out.pre_copy = s.pre_copy;
  s.staged.clear();
  return out;
}

void ContainerCheckpoint::retract_group_member() {
  State& s = *s_;
  if (!s.staged.empty() && s.lock) (void)s.store.remove_one(s.staged, *s.lock);
  s.staged.clear();
  abandon();
}

// ------------------------------------------------------------------ one container

ToolVersions tool_versions(const NodeConfig& config, const std::string& runc) {
  ToolVersions v;
  if (!config.criu.empty()) v.criu = first_line_of({config.criu, "--version"});
  v.runc = first_line_of({runc, "--version"});
  v.kernel = kernel_release();
  return v;
}

Result<CheckpointOutcome> checkpoint_container(const ContainerRecord& c, const NodeConfig& config,
                                               const std::string& runc_path,
                                               const CheckpointOptions& options) {
  auto ckpt = ContainerCheckpoint::begin(c, config, runc_path, options);
  if (!ckpt) return std::unexpected(ckpt.error());
  ckpt->pre_copy();
  return ckpt->finish();
}

}  // namespace arch
