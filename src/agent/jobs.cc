// JobManager: launch, reap, checkpoint (CRIU RPC into the store, then an archive), restore
// (from the store or an archive, verified first), adopt; and the HTTP routes.
#include "jobs.h"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/core.h>
#include <httplib.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <thread>

#include "base/file_util.h"
#include "base/names.h"
#include "base/process.h"
#include "container/finalize.h"
#include "criu/criu_rpc.h"
#include "jobs/job_archive.h"
#include "jobs/job_launch.h"
#include "private_dir.h"
#include "store/checkpoint_store.h"
#include "store/manifest.h"

namespace arch::agent {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

long now_seconds() {
  return static_cast<long>(std::time(nullptr));
}

std::string rfc3339(long t) {
  std::time_t tt = t;
  std::tm tm{};
  ::gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string hostname() {
  char buf[256] = {};
  ::gethostname(buf, sizeof buf - 1);
  return buf;
}

std::string kernel_release() {
  utsname u{};
  return ::uname(&u) == 0 ? u.release : "";
}

std::unexpected<Error> fail_code(std::string message, int code) {
  return std::unexpected(Error(std::move(message), code));
}

std::string find_criu(const NodeConfig& config) {
  if (!config.criu.empty()) return config.criu;
  for (const char* p : {"/opt/arch/criu/bin/criu", "/usr/local/sbin/criu", "/usr/sbin/criu"}) {
    if (::access(p, X_OK) == 0) return p;
  }
  return "/usr/sbin/criu";
}

Result<void> make_dir(int dirfd, const char* name) {
  if (::mkdirat(dirfd, name, 0700) != 0 && errno != EEXIST)
    return fail_errno(std::string("mkdir ") + name);
  return {};
}

Result<void> write_at(int dirfd, const char* name, std::string_view data) {
  UniqueFd fd(::openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) return fail_errno(std::string("create ") + name);
  return write_all(fd.get(), data);
}

Result<void> copy_file(const std::string& from, const std::string& to) {
  auto in = open_file(from, O_RDONLY | O_NOFOLLOW);
  if (!in) return std::unexpected(in.error());
  auto out = open_file(to, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0600);
  if (!out) return std::unexpected(out.error());
  for (;;) {
    ssize_t n = ::copy_file_range(in->get(), nullptr, out->get(), nullptr, 1 << 30, 0);
    if (n < 0) return fail_errno("copy " + from);
    if (n == 0) return {};
  }
}

// Hard-links (or, across filesystems, copies) the tree `from` into the existing dir `to`,
// so that CRIU can write beside the images without touching a committed checkpoint.
Result<void> link_tree(const std::string& from, const std::string& to) {
  auto dir = open_file(from, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  if (!dir) return std::unexpected(dir.error());
  auto names = list_directory(dir->get());
  if (!names) return std::unexpected(names.error());
  for (const auto& n : *names) {
    std::string src = from + "/" + n, dst = to + "/" + n;
    struct stat st {};
    if (::lstat(src.c_str(), &st) != 0) return fail_errno("stat " + src);
    if (S_ISDIR(st.st_mode)) {
      if (::mkdir(dst.c_str(), 0700) != 0 && errno != EEXIST) return fail_errno("mkdir " + dst);
      if (auto r = link_tree(src, dst); !r) return r;
    } else if (S_ISREG(st.st_mode)) {
      if (::link(src.c_str(), dst.c_str()) != 0) {
        if (errno != EXDEV && errno != EPERM) return fail_errno("link " + src);
        if (auto r = copy_file(src, dst); !r) return r;
      }
    }
  }
  return {};
}

std::string proc_link(pid_t pid, const char* what) {
  char buf[4096];
  ssize_t n = ::readlink(fmt::format("/proc/{}/{}", pid, what).c_str(), buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : "";
}

// Whether the job's pid is still the job's process (not a reused pid).
bool same_process(const JobRecord& rec) {
  auto st = read_proc_stat(rec.pid);
  return st && st->start_time == rec.start_time;
}

void record_exit(JobRecord& rec, int status) {
  rec.state = job_state::kExited;
  rec.finished = now_seconds();
  if (WIFEXITED(status)) {
    rec.exit_code = WEXITSTATUS(status);
    rec.exit_signal = 0;
  } else if (WIFSIGNALED(status)) {
    rec.exit_signal = WTERMSIG(status);
    rec.exit_code = 128 + rec.exit_signal;
  }
}

// Reaps our zombie children that belong to `ids` (their pid, session or process group is
// one of them: orphans of a job come back to archd, the subreaper) and returns the first
// live process that does (0: none). A pid stays taken while any process still has it as
// its session or group id, so all of them must go before CRIU can reuse it.
pid_t reap_job_zombies(const std::set<pid_t>& ids, const std::set<pid_t>& keep = {}) {
  pid_t self = ::getpid(), taken = 0;
  for_each_process([&](pid_t p, const ProcStat& st) {
    if (!(ids.contains(p) || ids.contains(st.sid) || ids.contains(st.pgid))) return;
    int status = 0;
    if (st.state == 'Z' && st.ppid == self && !keep.contains(p) &&
        ::waitpid(p, &status, WNOHANG) == p)
      return;
    if (taken == 0) taken = p;
  });
  return taken;
}

// Reaps every zombie child of ours outside archd's own session, except `keep`.
void reap_orphans(const std::set<pid_t>& keep) {
  pid_t self = ::getpid(), own_session = ::getsid(0);
  for_each_process([&](pid_t p, const ProcStat& st) {
    if (st.ppid != self || st.state != 'Z' || st.sid == own_session || keep.contains(p)) return;
    int status = 0;
    ::waitpid(p, &status, WNOHANG);
  });
}

// Waits (up to `timeout`) until none of `pids` is taken, reaping those that are our zombies.
Result<void> wait_pids_free(const std::vector<pid_t>& pids, std::chrono::milliseconds timeout) {
  std::set<pid_t> ids(pids.begin(), pids.end());
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    pid_t taken = reap_job_zombies(ids);
    if (taken == 0) return {};
    if (std::chrono::steady_clock::now() > deadline) {
      auto argv = process_argv(taken);
      return fail_code(
          fmt::format("pid {} ({}) still runs with a pid, session or process group "
                      "the checkpoint needs: CRIU restores a job with its original pids",
                      taken, argv.empty() ? "?" : join_argv(argv)),
          EBUSY);
    }
    std::this_thread::sleep_for(20ms);
  }
}

}  // namespace

// Marks a job busy for the lifetime of the guard.
struct JobManager::Busy {
  JobManager* m;
  std::string id;
  ~Busy() {
    std::lock_guard lock(m->mutex_);
    m->busy_.erase(id);
  }
};

JobManager::JobManager(NodeConfig config, std::string state_dir, Logger log)
    : config_(std::move(config)),
      state_dir_(std::move(state_dir)),
      log_(std::move(log)),
      criu_(find_criu(config_)) {}

JobManager::~JobManager() {
  stop();
}

std::string JobManager::job_dir(const std::string& id) const {
  return state_dir_ + "/" + id;
}

void JobManager::save_locked() {
  std::vector<JobRecord> all;
  for (const auto& [id, rec] : jobs_) all.push_back(rec);
  if (auto saved = save_jobs(state_dir_ + "/jobs.json", all); !saved) {
    log_(LogLevel::kError, "jobs: " + saved.error().message());
  }
}

void JobManager::set_event_sink(std::function<void(Event)> sink) {
  std::lock_guard lock(mutex_);
  sink_ = std::move(sink);
}

void JobManager::emit_locked(const std::string& id, std::string outcome, std::string detail,
                             double duration_ms) {
  if (!sink_) return;
  sink_({.kind = "job",
         .ns = kJobsNamespace,
         .id = id,
         .outcome = std::move(outcome),
         .duration_ms = duration_ms,
         .detail = std::move(detail)});
}

void JobManager::emit(const std::string& id, std::string outcome, std::string detail,
                      double duration_ms) {
  std::lock_guard lock(mutex_);
  emit_locked(id, std::move(outcome), std::move(detail), duration_ms);
}

Result<void> JobManager::start() {
  if (::prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) return fail_errno("prctl(PR_SET_CHILD_SUBREAPER)");
  if (auto made = make_private_dirs(state_dir_); !made) return made;
  auto loaded = load_jobs(state_dir_ + "/jobs.json");
  if (!loaded) return std::unexpected(loaded.error());
  std::lock_guard lock(mutex_);
  for (auto& rec : *loaded) {
    if (rec.alive()) {
      // Not our child any more (archd restarted): watch it, exit status unknown.
      auto st = read_proc_stat(rec.pid);
      bool same = st && st->start_time == rec.start_time && st->state != 'Z';
      rec.state = same ? job_state::kDetached : job_state::kLost;
      if (!same) rec.finished = now_seconds();
      log_(LogLevel::kInfo,
           fmt::format("job {} ({}): {} after an archd restart", rec.id, rec.name, rec.state));
    }
    jobs_[rec.id] = rec;
  }
  save_locked();
  stopping_ = false;
  reaper_ = std::thread([this] { reap_loop(); });
  return {};
}

void JobManager::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (reaper_.joinable()) reaper_.join();
}

void JobManager::reap_loop() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    lock.unlock();
    reap_once();
    lock.lock();
    wake_.wait_for(lock, 100ms, [this] { return stopping_; });
  }
}

void JobManager::reap_once() {
  std::lock_guard lock(mutex_);
  bool changed = false;
  for (auto& [id, rec] : jobs_) {
    if (!rec.alive() || busy_.contains(id)) continue;
    if (rec.state == job_state::kRunning) {
      int status = 0;
      pid_t r = ::waitpid(rec.pid, &status, WNOHANG);
      if (r == rec.pid) {
        record_exit(rec, status);
        changed = true;
        emit_locked(id, "exited",
                    rec.exit_signal != 0 ? fmt::format("signal {}", rec.exit_signal)
                                         : fmt::format("exit {}", rec.exit_code));
        log_(LogLevel::kInfo, fmt::format("job {} ({}) exited: {}", id, rec.name, rec.exit_code));
      } else if (r < 0 && errno == ECHILD) {
        rec.state = job_state::kDetached;
        changed = true;
      }
    } else {
      auto st = read_proc_stat(rec.pid);
      if (!st || st->start_time != rec.start_time || st->state == 'Z') {
        rec.state = job_state::kLost;
        rec.finished = now_seconds();
        changed = true;
        emit_locked(id, "lost", "ended while detached: exit status unknown");
      }
    }
  }
  for (auto it = reap_quietly_.begin(); it != reap_quietly_.end();) {
    int status = 0;
    pid_t r = ::waitpid(*it, &status, WNOHANG);
    it = (r == *it || (r < 0 && errno == ECHILD)) ? reap_quietly_.erase(it) : std::next(it);
  }
  // Orphans: descendants of jobs that came back to us (subreaper) and died, also of jobs
  // removed since. They are in other sessions than archd's own, which holds the runc and
  // CRIU children that their callers wait for. Roots of running jobs are left to the loop
  // above.
  static int tick = 0;
  if (++tick % 10 == 0) {
    std::set<pid_t> roots;
    for (const auto& [id, rec] : jobs_) {
      if (rec.alive()) roots.insert(rec.pid);
    }
    reap_orphans(roots);
  }
  if (changed) save_locked();
}

Result<JobRecord*> JobManager::find_locked(const std::string& id_or_name) {
  if (auto it = jobs_.find(id_or_name); it != jobs_.end()) return &it->second;
  JobRecord* found = nullptr;
  for (auto& [id, rec] : jobs_) {
    if (rec.name != id_or_name) continue;
    if (found != nullptr) {
      return fail_code("more than one job is named '" + id_or_name + "': use its id", EINVAL);
    }
    found = &rec;
  }
  if (found == nullptr) return fail_code("no job '" + id_or_name + "'", ENOENT);
  return found;
}

Result<JobRecord> JobManager::run(JobRunRequest r) {
  if (r.argv.empty() || r.argv[0].empty()) return fail_code("no command to run", EINVAL);
  if (r.cwd.empty() || r.cwd.front() != '/')
    return fail_code("the directory must be absolute", EINVAL);
  for (const auto& e : r.env) {
    if (e.find('=') == std::string::npos || e.front() == '=')
      return fail_code("environment entry '" + e + "' is not NAME=VALUE", EINVAL);
  }
  if (r.name.empty()) r.name = default_job_name(r.argv);
  if (auto ok = validate_job_name(r.name); !ok) return fail_code(ok.error().text(), EINVAL);
  JobRecord rec;
  rec.id = new_job_id();
  rec.name = r.name;
  rec.argv = r.argv;
  rec.env = r.env;
  rec.cwd = r.cwd;
  if (auto made = make_private_dirs(job_dir(rec.id)); !made) return std::unexpected(made.error());
  rec.log = job_dir(rec.id) + "/output.log";
  rec.log_key = rec.log.substr(1);
  std::lock_guard lock(mutex_);  // The reaper must not see the child before its record.
  auto pid = launch_job({rec.argv, rec.env, rec.cwd, rec.log});
  if (!pid) {
    remove_directory_contents(job_dir(rec.id));
    ::rmdir(job_dir(rec.id).c_str());
    return fail_code(pid.error().message(), EINVAL);
  }
  rec.pid = *pid;
  if (auto st = read_proc_stat(rec.pid)) rec.start_time = st->start_time;
  rec.created = rec.started = now_seconds();
  jobs_[rec.id] = rec;
  save_locked();
  emit_locked(rec.id, "started",
              fmt::format("{}: pid {}: {}", rec.name, rec.pid, join_argv(rec.argv)));
  log_(LogLevel::kInfo, fmt::format("job {} ({}) started: pid {}: {}", rec.id, rec.name, rec.pid,
                                    join_argv(rec.argv)));
  return rec;
}

std::vector<JobRecord> JobManager::list() {
  std::lock_guard lock(mutex_);
  std::vector<JobRecord> out;
  for (const auto& [id, rec] : jobs_) out.push_back(rec);
  std::sort(out.begin(), out.end(),
            [](const JobRecord& a, const JobRecord& b) { return a.created < b.created; });
  return out;
}

Result<JobRecord> JobManager::get(const std::string& id_or_name) {
  std::lock_guard lock(mutex_);
  auto rec = find_locked(id_or_name);
  if (!rec) return std::unexpected(rec.error());
  return **rec;
}

Result<std::string> JobManager::read_log(const std::string& id_or_name, uint64_t offset,
                                         std::size_t max) {
  auto rec = get(id_or_name);
  if (!rec) return std::unexpected(rec.error());
  if (rec->log.empty())
    return fail_code("job " + rec->id + " has no log (an adopted process)", EINVAL);
  auto fd = open_file(rec->log, O_RDONLY | O_NOFOLLOW);
  if (!fd)
    return fd.error().code() == ENOENT ? Result<std::string>("") : std::unexpected(fd.error());
  std::string buf(max, '\0');
  ssize_t n = retry_eintr(
      [&] { return ::pread(fd->get(), buf.data(), buf.size(), static_cast<off_t>(offset)); });
  if (n < 0) return fail_errno("read " + rec->log);
  buf.resize(static_cast<std::size_t>(n));
  return buf;
}

Result<JobRecord> JobManager::kill(const std::string& id_or_name, int signal) {
  std::lock_guard lock(mutex_);
  auto rec = find_locked(id_or_name);
  if (!rec) return std::unexpected(rec.error());
  JobRecord& r = **rec;
  if (!r.alive()) return fail_code("job " + r.id + " is not running (" + r.state + ")", EINVAL);
  if (signal < 1 || signal >= NSIG)
    return fail_code("bad signal " + std::to_string(signal), EINVAL);
  if (!same_process(r))
    return fail_code("job " + r.id + ": process " + std::to_string(r.pid) + " is gone", EINVAL);
  // The job's process group (its session leader's), else the process alone.
  if (::kill(-r.pid, signal) != 0 && ::kill(r.pid, signal) != 0) {
    return fail_errno(fmt::format("kill {} {}", r.pid, signal));
  }
  return r;
}

Result<void> JobManager::remove(const std::string& id_or_name, bool force) {
  std::string id;
  pid_t pid = 0;
  {
    std::lock_guard lock(mutex_);
    auto rec = find_locked(id_or_name);
    if (!rec) return std::unexpected(rec.error());
    id = (*rec)->id;
    if (busy_.contains(id))
      return fail_code("job " + id + " is being checkpointed or restored", EBUSY);
    if ((*rec)->alive()) {
      if (!force) return fail_code("job " + id + " is running: kill it first (or --force)", EBUSY);
      if (same_process(**rec)) {
        pid = (*rec)->pid;
        ::kill(-pid, SIGKILL);
        ::kill(pid, SIGKILL);
      }
    }
    busy_.insert(id);
  }
  Busy busy{this, id};
  if (pid > 0) {
    if (auto freed = wait_pids_free({pid}, 5s); !freed) return freed;
  }
  CheckpointStore store(config_.store_path, config_.keep);
  if (::access((config_.store_path + "/" + kJobsNamespace + "/" + id).c_str(), F_OK) == 0) {
    auto klock = store.lock(kJobsNamespace, id, 30s);
    if (!klock) return std::unexpected(klock.error());
    if (auto removed = store.remove(kJobsNamespace, id, *klock); !removed) return removed;
  }
  remove_directory_contents(job_dir(id));
  ::rmdir(job_dir(id).c_str());
  std::lock_guard lock(mutex_);
  jobs_.erase(id);
  save_locked();
  emit_locked(id, "removed", "");
  return {};
}

Result<json> JobManager::checkpoint(const std::string& id_or_name, const CheckpointRequest& req) {
  std::string id;
  {
    std::lock_guard lock(mutex_);
    auto rec = find_locked(id_or_name);
    if (!rec) return std::unexpected(rec.error());
    id = (*rec)->id;
    if (!(*rec)->alive())
      return fail_code("job " + id + " is not running (" + (*rec)->state + ")", EINVAL);
    if (!busy_.insert(id).second)
      return fail_code("job " + id + " is already being checkpointed or restored", EBUSY);
  }
  Busy busy{this, id};
  auto t0 = std::chrono::steady_clock::now();
  auto out = checkpoint_job(id, req, {});
  double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (out) {
    emit(id, "checkpointed", out->value("archive", out->value("checkpoint", "")), ms);
  } else {
    emit(id, "checkpoint-failed", out.error().message(), ms);
  }
  return out;
}

// The dump pipeline: check -> lock key -> staging -> CRIU dump -> job.json -> commit ->
// (job stopped: expect its exit) -> export -> record.
Result<json> JobManager::checkpoint_job(const std::string& id, const CheckpointRequest& req,
                                        std::vector<std::string> warnings) {
  JobRecord rec;
  {
    std::lock_guard lock(mutex_);
    rec = jobs_.at(id);
  }
  bool leave = req.leave_running.value_or(config_.jobs.leave_running);
  std::string export_dir = req.export_dir.empty() ? config_.jobs.dump_dir : req.export_dir;
  if (!export_dir.empty()) {
    struct stat st {};
    if (export_dir.front() != '/') return fail_code("export directory must be absolute", EINVAL);
    if (::stat(export_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
      return fail_code("export directory " + export_dir + " does not exist", EINVAL);
  }
  auto st = read_proc_stat(rec.pid);
  if (!st || st->start_time != rec.start_time || st->state == 'Z')
    return fail_code(fmt::format("job {}: process {} is gone", id, rec.pid), EINVAL);
  bool shell_job = st->sid != rec.pid;
  std::vector<pid_t> pids = process_tree(rec.pid);

  CheckpointStore store(config_.store_path, config_.keep);
  auto klock = store.lock(kJobsNamespace, id, 30s);
  if (!klock) return std::unexpected(klock.error().wrap("checkpoint store"));
  (void)store.cleanup_stale(*klock);
  auto staging = store.begin(*klock);
  if (!staging) return std::unexpected(staging.error());
  for (const char* sub : {"images", "criu"}) {
    if (auto r = make_dir(staging->dirfd(), sub); !r) return std::unexpected(r.error());
  }
  UniqueFd images(::openat(staging->dirfd(), "images", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  UniqueFd work(::openat(staging->dirfd(), "criu", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!images || !work) return fail_errno("open staging directories");

  CriuDumpOptions o;
  o.pid = rec.pid;
  o.images_dir_fd = images.get();
  o.work_dir_fd = work.get();
  o.log_file = "dump.log";
  o.leave_running = leave;
  o.shell_job = shell_job;
  o.tcp_established = req.tcp_established;
  o.file_locks = true;
  CriuRpc criu(criu_);
  auto t0 = std::chrono::steady_clock::now();
  if (auto dumped = criu.dump(o); !dumped) {
    return std::unexpected(dumped.error().wrap("checkpoint job " + id + " (it keeps running)"));
  }
  double dump_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (!leave) {
    std::lock_guard lock(mutex_);
    jobs_[id].state = job_state::kCheckpointed;
    jobs_[id].finished = now_seconds();
    reap_quietly_.insert(rec.pid);
    dumped_pids_[id] = pids;
    save_locked();
  }
  json job_file = {{"job", rec},
                   {"shell_job", shell_job},
                   {"tcp_established", req.tcp_established},
                   {"pids", pids},
                   {"log_key", rec.log_key}};
  long now = now_seconds();
  Manifest m;
  m.ns = kJobsNamespace;
  m.key = id;
  m.container_id = id;
  m.node = hostname();
  m.image = rec.argv.empty() ? "" : rec.argv[0];
  m.created = rfc3339(now);
  if (auto v = criu.version()) m.versions.criu = v->text();
  m.versions.kernel = kernel_release();
  m.timings_ms["dump"] = dump_ms;
  m.extra = {{"kind", rec.kind}, {"name", rec.name}, {"leave_running", leave}};
  auto wrote = write_at(staging->dirfd(), kJobFileName, job_file.dump(2) + "\n");
  Result<std::string> committed =
      wrote ? store.commit(std::move(*staging), m, *klock) : std::unexpected(wrote.error());
  if (!committed) {
    if (!leave) {
      std::lock_guard lock(mutex_);
      jobs_[id].state = job_state::kLost;
      save_locked();
    }
    return std::unexpected(committed.error().wrap(
        leave
            ? "checkpoint job " + id + " (it keeps running)"
            : "checkpoint job " + id + ": the dump stopped the job but it could not be committed"));
  }
  json out = {{"checkpoint", *committed},
              {"warnings", warnings},
              {"dump_ms", dump_ms},
              {"leave_running", leave}};
  JobCheckpointRef ref{*committed, m.created, ""};
  if (!export_dir.empty()) {
    std::string file = export_dir + "/" + archive_file_name(rec.name, now, config_.jobs.compress);
    auto t1 = std::chrono::steady_clock::now();
    auto bytes = export_checkpoint(*committed, file,
                                   {config_.jobs.compress, config_.jobs.compression_level});
    if (!bytes) {
      return std::unexpected(bytes.error().wrap("job " + id + " is checkpointed in " + *committed +
                                                " but the export failed"));
    }
    ref.archive = file;
    out["archive"] = file;
    out["archive_bytes"] = *bytes;
    out["export_ms"] =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t1).count();
  }
  std::lock_guard lock(mutex_);
  jobs_[id].checkpoint = ref;
  save_locked();
  out["job"] = jobs_[id];
  log_(LogLevel::kInfo, fmt::format("job {} ({}) checkpointed: {}{}", id, rec.name, *committed,
                                    ref.archive.empty() ? "" : ", exported " + ref.archive));
  return out;
}

// CRIU restore from `scratch`/images (a private copy: CRIU writes beside the images), the
// log handed over in place of the file the job had open, the root made our child.
Result<JobRecord> JobManager::restore_tree(JobRecord rec, const std::string& scratch,
                                           const json& job_file) {
  std::vector<pid_t> pids = job_file.value("pids", std::vector<pid_t>{});
  if (rec.pid > 0) pids.push_back(rec.pid);
  if (auto freed = wait_pids_free(pids, 5s); !freed) return std::unexpected(freed.error());
  auto images = open_file(scratch + "/images", O_RDONLY | O_DIRECTORY);
  auto work = open_file(scratch, O_RDONLY | O_DIRECTORY);
  if (!images || !work) return std::unexpected((images ? work : images).error());
  CriuRestoreOptions o;
  o.images_dir_fd = images->get();
  o.work_dir_fd = work->get();
  o.log_file = "restore.log";
  o.shell_job = job_file.value("shell_job", false);
  o.tcp_established = job_file.value("tcp_established", false);
  o.file_locks = true;
  UniqueFd log_fd;
  std::string log_key = job_file.value("log_key", "");
  if (!rec.log.empty() && !log_key.empty()) {
    if (auto made = make_private_dirs(dirname_of(rec.log)); !made)
      return std::unexpected(made.error());
    auto fd = open_file(rec.log, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW, 0600);
    if (!fd) return std::unexpected(fd.error().wrap("job log"));
    log_fd = std::move(*fd);
    o.inherit_fds.emplace_back(log_key, log_fd.get());
  }
  std::lock_guard lock(mutex_);  // The reaper must not see the child before its record.
  auto pid = CriuRpc(criu_).restore(o);
  // CRIU's log of the last restore stays with a known job (the scratch copy goes).
  if (jobs_.contains(rec.id) && make_private_dirs(job_dir(rec.id))) {
    std::string kept = job_dir(rec.id) + "/restore.log";
    ::unlink(kept.c_str());
    (void)copy_file(scratch + "/restore.log", kept);
  }
  if (!pid) return std::unexpected(pid.error());
  rec.pid = *pid;
  // The job's stdout and stderr are now this node's log: the key of its next dump.
  if (log_fd) rec.log_key = rec.log.substr(1);
  if (auto st = read_proc_stat(rec.pid)) rec.start_time = st->start_time;
  rec.state = job_state::kRunning;
  rec.exit_code = -1;
  rec.exit_signal = 0;
  rec.finished = 0;
  rec.started = now_seconds();
  ++rec.restores;
  jobs_[rec.id] = rec;
  dumped_pids_.erase(rec.id);
  save_locked();
  log_(LogLevel::kInfo, fmt::format("job {} ({}) restored: pid {}", rec.id, rec.name, rec.pid));
  return rec;
}

Result<JobRecord> JobManager::restore(const std::string& id_or_name, const std::string& archive) {
  auto t0 = std::chrono::steady_clock::now();
  auto rec = restore_one(id_or_name, archive);
  double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (rec) {
    emit(rec->id, "restored",
         fmt::format("pid {}{}", rec->pid, archive.empty() ? "" : " from " + archive), ms);
  } else if (rec.error().code() != ENOENT) {
    emit(id_or_name, "restore-failed", rec.error().message(), ms);
  }
  return rec;
}

Result<JobRecord> JobManager::restore_one(const std::string& id_or_name,
                                          const std::string& archive) {
  if (!archive.empty()) return restore_imported(id_or_name, archive, true);
  JobRecord rec;
  {
    std::lock_guard lock(mutex_);
    auto found = find_locked(id_or_name);
    if (!found) return std::unexpected(found.error());
    rec = **found;
    if (rec.alive())
      return fail_code("job " + rec.id + " is running: checkpoint or kill it first", EBUSY);
    if (!busy_.insert(rec.id).second)
      return fail_code("job " + rec.id + " is being checkpointed or restored", EBUSY);
  }
  Busy busy{this, rec.id};
  CheckpointStore store(config_.store_path, config_.keep);
  auto klock = store.lock(kJobsNamespace, rec.id, 30s);
  if (!klock) return std::unexpected(klock.error().wrap("checkpoint store"));
  auto ckpt = store.latest_verified(kJobsNamespace, rec.id, *klock);
  if (!ckpt) {
    if (ckpt.error().code() == ENOENT)
      return fail_code("job " + rec.id + " has no checkpoint in " + config_.store_path, ENOENT);
    return std::unexpected(ckpt.error());
  }
  auto text = read_file(ckpt->path + "/" + kJobFileName);
  if (!text) return std::unexpected(text.error().wrap("checkpoint " + ckpt->path));
  json job_file = json::parse(*text, nullptr, false);
  if (job_file.is_discarded()) return fail("checkpoint " + ckpt->path + ": job.json is not JSON");
  auto scratch = store.begin(*klock);
  if (!scratch) return std::unexpected(scratch.error());
  if (auto linked = link_tree(ckpt->path, scratch->path()); !linked)
    return std::unexpected(linked.error());
  auto restored = restore_tree(rec, scratch->path(), job_file);
  if (!restored)
    return std::unexpected(restored.error().wrap("restore job " + rec.id + " from " + ckpt->path));
  return restored;
}

// An archive (or a checkpoint directory) from anywhere: unpacked into a scratch key of the
// store, verified against its manifest, then restored; the scratch key is removed after.
Result<JobRecord> JobManager::restore_imported(const std::string& id_hint, const std::string& path,
                                               bool is_archive) {
  CheckpointStore store(config_.store_path, config_.keep);
  std::string scratch_key = "import-" + new_job_id();
  auto klock = store.lock(kJobsNamespace, scratch_key, 30s);
  if (!klock) return std::unexpected(klock.error().wrap("checkpoint store"));
  struct Cleanup {
    CheckpointStore& store;
    std::string key;
    KeyLock& lock;
    ~Cleanup() { (void)store.remove(kJobsNamespace, key, lock); }
  } cleanup{store, scratch_key, *klock};
  auto scratch = store.begin(*klock);
  if (!scratch) return std::unexpected(scratch.error());
  ExpansionLimits caps{config_.limits.max_archive_bytes, config_.limits.max_entries};
  auto unpacked =
      is_archive ? import_archive(path, scratch->path(), caps) : link_tree(path, scratch->path());
  if (!unpacked) return fail_code(unpacked.error().message(), EINVAL);
  auto mtext = read_file(scratch->path() + "/" + kManifestFileName);
  if (!mtext) return fail_code(path + " has no manifest.json: not an ARCH checkpoint", EINVAL);
  auto manifest = parse_manifest(*mtext);
  if (!manifest) return fail_code(path + ": " + manifest.error().message(), EINVAL);
  // criu/restore.log is ours to write: only what the manifest lists must match.
  if (auto ok = verify_manifest(scratch->path(), *manifest); !ok)
    return fail_code(path + " does not verify (damaged?): " + ok.error().message(), EINVAL);
  if (manifest->ns != kJobsNamespace)
    return fail_code(path + " is not a job checkpoint (namespace " + manifest->ns + ")", EINVAL);
  auto text = read_file(scratch->path() + "/" + kJobFileName);
  json job_file = text ? json::parse(*text, nullptr, false) : json();
  if (!text || job_file.is_discarded() || !job_file.contains("job"))
    return fail_code(path + ": job.json is missing or not JSON", EINVAL);
  JobRecord from;
  try {
    from = job_file.at("job").get<JobRecord>();
  } catch (const json::exception& e) {
    return fail_code(path + ": job.json: " + e.what(), EINVAL);
  }
  if (!validate_name("job id", from.id)) return fail_code(path + ": bad job id", EINVAL);

  JobRecord rec;
  {
    std::lock_guard lock(mutex_);
    std::string want = id_hint.empty() ? from.id : id_hint;
    auto found = find_locked(want);
    if (found) {
      rec = **found;
    } else if (!id_hint.empty() && id_hint != from.id) {
      return fail_code("no job '" + id_hint + "' here, and " + path + " holds job " + from.id,
                       ENOENT);
    } else {
      rec = from;  // As it was at the dump, when it was running there.
      rec.state = job_state::kCheckpointed;
      rec.log = rec.log.empty() ? "" : job_dir(rec.id) + "/output.log";
      rec.created = now_seconds();
      rec.checkpoint = {};
    }
    if (rec.alive())
      return fail_code("job " + rec.id + " is running: checkpoint or kill it first", EBUSY);
    if (!busy_.insert(rec.id).second)
      return fail_code("job " + rec.id + " is being checkpointed or restored", EBUSY);
  }
  Busy busy{this, rec.id};
  rec.log_key = job_file.value("log_key", rec.log_key);
  bool is_new = !get(rec.id);
  auto restored = restore_tree(rec, scratch->path(), job_file);
  if (!restored) {
    if (is_new) {  // Nothing of a job that never came to be is left behind.
      (void)remove_directory_contents(job_dir(rec.id));
      ::rmdir(job_dir(rec.id).c_str());
    }
    return std::unexpected(restored.error().wrap("restore " + path));
  }
  std::lock_guard lock(mutex_);
  JobRecord& r = jobs_[restored->id];
  r.checkpoint = {"", manifest->created, is_archive ? path : ""};
  if (!is_archive) r.checkpoint.path = path;
  save_locked();
  return r;
}

Result<json> JobManager::checkpoint_process(pid_t pid, const CheckpointRequest& req) {
  if (pid <= 1 || pid == ::getpid())
    return fail_code(fmt::format("refusing to checkpoint pid {}", pid), EINVAL);
  auto st = read_proc_stat(pid);
  if (!st) return fail_code(fmt::format("no process {}", pid), ENOENT);
  std::vector<std::string> warnings = dump_warnings(pid);
  std::string id;
  {
    std::lock_guard lock(mutex_);
    for (auto& [jid, rec] : jobs_) {
      if (rec.alive() && rec.pid == pid) id = jid;
    }
    if (id.empty()) {
      JobRecord rec;
      rec.id = new_job_id();
      rec.kind = "process";
      rec.argv = process_argv(pid);
      rec.name = default_job_name(rec.argv);
      rec.cwd = proc_link(pid, "cwd");
      rec.pid = pid;
      rec.start_time = st->start_time;
      rec.state = st->ppid == ::getpid() ? job_state::kRunning : job_state::kDetached;
      rec.created = rec.started = now_seconds();
      id = rec.id;
      jobs_[id] = rec;
    }
    if (!busy_.insert(id).second)
      return fail_code("process " + std::to_string(pid) + " is being checkpointed", EBUSY);
  }
  Busy busy{this, id};
  auto done = checkpoint_job(id, req, warnings);
  if (!done) {
    std::string msg = done.error().message();
    for (const auto& w : warnings) msg += "\nwarning: " + w;
    std::lock_guard lock(mutex_);
    if (jobs_[id].kind == "process" && jobs_[id].checkpoint.path.empty()) jobs_.erase(id);
    return fail_code(msg, done.error().code() == EINVAL ? EINVAL : 0);
  }
  return done;
}

Result<JobRecord> JobManager::restore_process(const std::string& path) {
  struct stat st {};
  if (path.empty() || path.front() != '/') return fail_code("the path must be absolute", EINVAL);
  if (::stat(path.c_str(), &st) != 0) return fail_code(path + " does not exist", ENOENT);
  return restore_imported("", path, S_ISREG(st.st_mode));
}

json JobManager::checkpoint_all(double deadline_seconds) {
  auto deadline = std::chrono::steady_clock::now() +
                  std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                      std::chrono::duration<double>(deadline_seconds));
  std::vector<std::string> ids;
  for (const auto& rec : list()) {
    if (rec.alive()) ids.push_back(rec.id);
  }
  std::mutex results_mutex;
  json results = json::array();
  std::atomic<std::size_t> next{0};
  auto worker = [&] {
    for (std::size_t i = next++; i < ids.size(); i = next++) {
      json r = {{"id", ids[i]}};
      if (std::chrono::steady_clock::now() >= deadline) {
        r["result"] = "skipped";
        r["detail"] = "deadline passed";
      } else {
        CheckpointRequest req;
        req.leave_running = false;
        auto out = checkpoint(ids[i], req);
        r["result"] = out ? "checkpointed" : "failed";
        r["detail"] =
            out ? out->value("archive", out->value("checkpoint", "")) : out.error().message();
      }
      log_(r["result"] == "checkpointed" ? LogLevel::kInfo : LogLevel::kWarn,
           fmt::format("drain: job {}: {}: {}", ids[i], r["result"].get<std::string>(),
                       r["detail"].get<std::string>()));
      std::lock_guard lock(results_mutex);
      results.push_back(std::move(r));
    }
  };
  std::vector<std::thread> workers;
  // finalize_parallel 0 means the finalize default (two per CPU), as for the containers.
  int parallel = config_.agent.finalize_parallel > 0 ? config_.agent.finalize_parallel
                                                     : default_finalize_parallel();
  std::size_t n = std::min<std::size_t>(ids.size(), static_cast<std::size_t>(parallel));
  for (std::size_t i = 0; i < n; ++i) workers.emplace_back(worker);
  for (auto& w : workers) w.join();
  return {{"jobs", results}};
}

// ---------------------------------------------------------------- HTTP routes

namespace {

void reply(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(2, ' ', false, json::error_handler_t::replace) + "\n",
                  "application/json");
}

void reply_error(httplib::Response& res, const Error& e) {
  int status = e.code() == EINVAL ? 400 : e.code() == ENOENT ? 404 : e.code() == EBUSY ? 409 : 500;
  reply(res, status, {{"error", status == 500 && e.code() != 0 ? e.message() : e.text()}});
}

Result<json> body_object(const httplib::Request& req) {
  if (req.body.empty()) return json::object();
  auto j = json::parse(req.body, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return std::unexpected(Error("body is not a JSON object", EINVAL));
  return j;
}

Result<CheckpointRequest> checkpoint_request(const json& j) {
  CheckpointRequest r;
  try {
    if (j.contains("leave_running") && !j["leave_running"].is_null())
      r.leave_running = j["leave_running"].get<bool>();
    r.export_dir = j.value("export_dir", "");
    r.tcp_established = j.value("tcp_established", false);
  } catch (const json::exception& e) {
    return std::unexpected(Error(e.what(), EINVAL));
  }
  return r;
}

template <class F>
auto with_body(F f) {
  return [f](const httplib::Request& req, httplib::Response& res) {
    auto body = body_object(req);
    if (!body) return reply_error(res, body.error());
    try {
      f(req, res, *body);
    } catch (const json::exception& e) {
      reply_error(res, Error(std::string("bad request: ") + e.what(), EINVAL));
    }
  };
}

}  // namespace

void register_job_routes(httplib::Server& s, JobManager& jobs) {
  s.Get("/v1/jobs", [&jobs](const httplib::Request&, httplib::Response& res) {
    reply(res, 200, {{"jobs", jobs.list()}});
  });
  s.Post("/v1/jobs",
         with_body([&jobs](const httplib::Request&, httplib::Response& res, const json& b) {
           JobRunRequest r{b.at("argv").get<std::vector<std::string>>(),
                           b.value("env", std::vector<std::string>{}), b.value("cwd", ""),
                           b.value("name", "")};
           auto rec = jobs.run(std::move(r));
           if (!rec) return reply_error(res, rec.error());
           reply(res, 201, *rec);
         }));
  s.Post("/v1/jobs/restore",
         with_body([&jobs](const httplib::Request&, httplib::Response& res, const json& b) {
           std::string archive = b.value("archive", "");
           if (archive.empty()) return reply_error(res, Error("archive is required", EINVAL));
           auto rec = jobs.restore("", archive);
           if (!rec) return reply_error(res, rec.error());
           reply(res, 200, *rec);
         }));
  s.Get(R"(/v1/jobs/([^/]+))", [&jobs](const httplib::Request& req, httplib::Response& res) {
    auto rec = jobs.get(req.matches[1].str());
    if (!rec) return reply_error(res, rec.error());
    reply(res, 200, *rec);
  });
  s.Get(R"(/v1/jobs/([^/]+)/logs)", [&jobs](const httplib::Request& req, httplib::Response& res) {
    uint64_t offset = req.has_param("offset")
                          ? std::strtoull(req.get_param_value("offset").c_str(), nullptr, 10)
                          : 0;
    auto rec = jobs.get(req.matches[1].str());
    if (!rec) return reply_error(res, rec.error());
    auto data = jobs.read_log(rec->id, offset, 1 << 20);
    if (!data) return reply_error(res, data.error());
    res.set_header("X-Arch-Next-Offset", std::to_string(offset + data->size()));
    res.set_header("X-Arch-Job-State", rec->state);
    res.set_content(*data, "application/octet-stream");
  });
  s.Post(R"(/v1/jobs/([^/]+)/kill)",
         with_body([&jobs](const httplib::Request& req, httplib::Response& res, const json& b) {
           auto rec = jobs.kill(req.matches[1].str(), b.value("signal", SIGTERM));
           if (!rec) return reply_error(res, rec.error());
           reply(res, 200, *rec);
         }));
  s.Delete(R"(/v1/jobs/([^/]+))", [&jobs](const httplib::Request& req, httplib::Response& res) {
    bool force = req.has_param("force") && req.get_param_value("force") == "1";
    auto done = jobs.remove(req.matches[1].str(), force);
    if (!done) return reply_error(res, done.error());
    reply(res, 200, {{"removed", req.matches[1].str()}});
  });
  s.Post(R"(/v1/jobs/([^/]+)/checkpoint)",
         with_body([&jobs](const httplib::Request& req, httplib::Response& res, const json& b) {
           auto r = checkpoint_request(b);
           if (!r) return reply_error(res, r.error());
           auto out = jobs.checkpoint(req.matches[1].str(), *r);
           if (!out) return reply_error(res, out.error());
           reply(res, 200, *out);
         }));
  s.Post(R"(/v1/jobs/([^/]+)/restore)",
         with_body([&jobs](const httplib::Request& req, httplib::Response& res, const json& b) {
           auto rec = jobs.restore(req.matches[1].str(), b.value("archive", ""));
           if (!rec) return reply_error(res, rec.error());
           reply(res, 200, *rec);
         }));
  s.Post("/v1/processes/checkpoint",
         with_body([&jobs](const httplib::Request&, httplib::Response& res, const json& b) {
           auto r = checkpoint_request(b);
           if (!r) return reply_error(res, r.error());
           auto out = jobs.checkpoint_process(b.at("pid").get<pid_t>(), *r);
           if (!out) return reply_error(res, out.error());
           reply(res, 200, *out);
         }));
  s.Post("/v1/processes/restore",
         with_body([&jobs](const httplib::Request&, httplib::Response& res, const json& b) {
           auto rec = jobs.restore_process(b.value("path", ""));
           if (!rec) return reply_error(res, rec.error());
           reply(res, 200, *rec);
         }));
}

}  // namespace arch::agent
