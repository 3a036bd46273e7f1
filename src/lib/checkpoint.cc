// Checkpoint: the pipeline validate → lock → freeze → capture rootfs → dump → commit,
// with the thaw-on-failure guarantee. Timings go into the manifest.
#include "checkpoint.h"

#include <fcntl.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>

#include "checkpoint_store.h"
#include "file_util.h"
#include "manifest.h"
#include "process.h"
#include "rootfs_diff.h"
#include "runc_client.h"
#include "runc_log.h"
#include "store_layout.h"
#include "version.h"

namespace arch {
namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

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

std::string hostname() {
  char buf[256] = {};
  ::gethostname(buf, sizeof buf - 1);
  return buf;
}

// Everything after the freeze: capture the rootfs, dump with --leave-running (the
// processes stay, frozen, until the checkpoint is committed). On error the caller thaws.
Result<void> capture_and_dump(const RuncClient& runc, const ContainerRecord& c,
                              const std::string& rootfs, const Staging& staging,
                              std::map<std::string, double>& timings) {
  auto start = Clock::now();
  auto upper = overlay_upperdir(rootfs);
  if (!upper) return std::unexpected(upper.error().wrap("find the writable layer"));
  auto tar = open_file(staging.path() + "/rootfs-diff.tar", O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (!tar) return std::unexpected(tar.error());
  auto stats = capture_rootfs_diff(*upper, tar->get());
  if (!stats) return std::unexpected(stats.error().wrap("capture the rootfs diff"));
  tar.value().reset();
  timings["rootfs"] = ms_since(start);

  start = Clock::now();
  auto dumped = runc.checkpoint(c.id, staging.path() + "/images", staging.path() + "/criu",
                                {"--leave-running"});
  if (!dumped) return dumped;
  timings["dump"] = ms_since(start);
  return {};
}

// Thaws the container if this process dies between the freeze and the end of the
// pipeline (kill -9 of archctl, OOM): a child in its own session waits on a pipe whose
// write end only we hold; EOF without the "done" line means we died, and it resumes the
// container. disarm() sends "done" and reaps it.
class ThawGuard {
 public:
  static Result<ThawGuard> arm(const std::vector<std::string>& resume_argv) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return fail_errno("pipe2");
    UniqueFd read_end(fds[0]), write_end(fds[1]);
    // Resumes at once, then twice more: a pause already under way when we died lands late.
    std::string resume;
    for (const auto& a : resume_argv) {
      std::string quoted;
      for (char ch : a) quoted += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
      resume += " '" + quoted + "'";
    }
    resume += " 2>/dev/null";
    std::string script = "read -r line || {" + resume + "; sleep 0.5;" + resume + "; sleep 2;" +
                         resume + "; }";
    auto pid = spawn_detached({"/bin/sh", "-c", script}, read_end.get());
    if (!pid) return std::unexpected(pid.error().wrap("start the thaw guard"));
    ThawGuard guard;
    guard.pid_ = *pid;
    guard.write_end_ = std::move(write_end);
    return guard;
  }
  ThawGuard(ThawGuard&& other) noexcept
      : pid_(std::exchange(other.pid_, -1)), write_end_(std::move(other.write_end_)) {}
  ThawGuard& operator=(ThawGuard&&) = delete;
  ~ThawGuard() { disarm(); }

  void disarm() {
    if (pid_ < 0) return;
    (void)write_all(write_end_.get(), "done\n");
    write_end_.reset();
    int status = 0;
    retry_eintr([&] { return ::waitpid(pid_, &status, 0); });
    pid_ = -1;
  }

 private:
  ThawGuard() = default;
  pid_t pid_ = -1;
  UniqueFd write_end_;
};

}  // namespace

ToolVersions tool_versions(const NodeConfig& config, const std::string& runc) {
  ToolVersions v;
  if (!config.criu.empty()) v.criu = first_line_of({config.criu, "--version"});
  v.runc = first_line_of({runc, "--version"});
  utsname u{};
  if (::uname(&u) == 0) v.kernel = u.release;
  return v;
}

Result<CheckpointOutcome> checkpoint_container(const ContainerRecord& c, const NodeConfig& config,
                                               const std::string& runc_path,
                                               const CheckpointOptions& options) {
  auto total_start = Clock::now();
  for (auto [kind, name] :
       {std::pair{"container id", &c.id}, {"namespace", &c.ns}, {"key", &c.key}}) {
    if (auto ok = validate_name(kind, *name); !ok) return std::unexpected(ok.error());
  }
  CheckpointStore store(c.store, config.keep);
  auto lock = store.lock(c.ns, c.key, std::chrono::seconds(options.lock_timeout_s));
  if (!lock) return std::unexpected(lock.error().wrap("lock " + c.ns + "/" + c.key));
  (void)store.cleanup_stale(*lock);

  RuncClient runc(runc_path, c.runc_root, config.criu);
  auto state = runc.state(c.id);
  if (!state) return std::unexpected(state.error());
  if (state->status != "running") {
    return fail("container " + c.ns + "/" + c.id + " is " + state->status + ", not running");
  }
  auto staging = store.begin(*lock);
  if (!staging) return std::unexpected(staging.error().wrap("start a checkpoint"));

  std::map<std::string, double> timings;
  auto start = Clock::now();
  auto guard = ThawGuard::arm(runc.resume_argv(c.id));
  if (!guard) return std::unexpected(guard.error());
  if (auto paused = runc.pause(c.id); !paused) return std::unexpected(paused.error());
  timings["freeze"] = ms_since(start);

  auto thaw_after = [&](const Error& e) -> std::unexpected<Error> {
    // The container must keep running: thaw it (it is frozen since the pause).
    auto thawed = runc.resume(c.id);
    std::string note = thawed ? " (container thawed and still running)"
                              : " (and thawing failed: " + thawed.error().message() + ")";
    return std::unexpected(Error(e.message() + note));
  };
  if (auto done = capture_and_dump(
          runc, c, state->rootfs.empty() ? c.bundle + "/rootfs" : state->rootfs, *staging, timings);
      !done) {
    return thaw_after(done.error());
  }

  start = Clock::now();
  Manifest manifest;
  manifest.ns = c.ns;
  manifest.key = c.key;
  manifest.container_id = c.id;
  manifest.node = hostname();
  manifest.created = format_utc(static_cast<long>(std::time(nullptr)));
  // Asked once per process: finalize checkpoints many containers with the same tools.
  static const ToolVersions versions = tool_versions(config, runc_path);
  manifest.versions = {kVersion, versions.criu, versions.runc, versions.kernel};
  manifest.timings_ms = timings;
  manifest.timings_ms["total_before_commit"] = ms_since(total_start);
  auto committed = store.commit(std::move(*staging), manifest, *lock);
  if (!committed) return thaw_after(committed.error().wrap("commit"));
  timings["commit"] = ms_since(start);

  // Committed: only now does the container end (or go on, with leave_running). SIGKILL is
  // queued while frozen and taken at the thaw, before any of its code runs again, so
  // nothing happens after the state the checkpoint holds.
  start = Clock::now();
  if (!options.leave_running) {
    if (auto killed = runc.kill(c.id, "KILL"); !killed) {
      return fail("checkpoint committed at " + *committed +
                  " but ending the container failed: " + killed.error().message());
    }
  }
  (void)runc.resume(c.id);
  timings["end"] = ms_since(start);
  timings["total"] = ms_since(total_start);

  CheckpointOutcome out;
  out.path = *committed;
  out.timings_ms = timings;
  return out;
}

}  // namespace arch
