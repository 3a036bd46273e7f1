// JobManager: archd's job table around the library's job pipeline (jobs/): launch, reap,
// lock (busy), events; checkpoint and restore through jobs/job_checkpoint.h and
// jobs/job_restore.h, with the table updated between their steps.
//
// About 650 lines, kept in one file on purpose: every method works on the same table under
// one mutex with the same invariants (a busy job is left alone by the reaper and by other
// requests; a restored child is recorded before the reaper can see it), and splitting the
// class across files would hide them. The steps themselves are in src/lib/jobs.
#include "jobs.h"

#include <fcntl.h>
#include <fmt/core.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <thread>

#include "base/clock.h"
#include "base/file_util.h"
#include "base/process.h"
#include "container/finalize.h"
#include "jobs/job_launch.h"
#include "private_dir.h"

namespace arch::agent {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

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

// Reaps every zombie child of ours outside archd's own session, except `keep`.
void reap_orphans(const std::set<pid_t>& keep) {
  pid_t self = ::getpid(), own_session = ::getsid(0);
  for_each_process([&](pid_t p, const ProcStat& st) {
    if (st.ppid != self || st.state != 'Z' || st.sid == own_session || keep.contains(p)) return;
    int status = 0;
    ::waitpid(p, &status, WNOHANG);
  });
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
      store_(job_store_config(config_)) {}

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
      return fail(ErrorKind::kInvalidInput,
                  "more than one job is named '" + id_or_name + "': use its id");
    }
    found = &rec;
  }
  if (found == nullptr) return fail(ErrorKind::kNotFound, "no job '" + id_or_name + "'");
  return found;
}

Result<JobRecord> JobManager::run(JobRunRequest r) {
  if (r.argv.empty() || r.argv[0].empty())
    return fail(ErrorKind::kInvalidInput, "no command to run");
  if (r.cwd.empty() || r.cwd.front() != '/')
    return fail(ErrorKind::kInvalidInput, "the directory must be absolute");
  for (const auto& e : r.env) {
    if (e.find('=') == std::string::npos || e.front() == '=')
      return fail(ErrorKind::kInvalidInput, "environment entry '" + e + "' is not NAME=VALUE");
  }
  if (r.name.empty()) r.name = default_job_name(r.argv);
  if (auto ok = validate_job_name(r.name); !ok)
    return fail(ErrorKind::kInvalidInput, ok.error().text());
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
    return fail(ErrorKind::kInvalidInput, pid.error().message());
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
    return fail(ErrorKind::kInvalidInput, "job " + rec->id + " has no log (an adopted process)");
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
  if (!r.alive())
    return fail(ErrorKind::kInvalidInput, "job " + r.id + " is not running (" + r.state + ")");
  if (signal < 1 || signal >= NSIG)
    return fail(ErrorKind::kInvalidInput, "bad signal " + std::to_string(signal));
  if (!same_process(r))
    return fail(ErrorKind::kInvalidInput,
                "job " + r.id + ": process " + std::to_string(r.pid) + " is gone");
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
      return fail(ErrorKind::kConflict, "job " + id + " is being checkpointed or restored");
    if ((*rec)->alive()) {
      if (!force)
        return fail(ErrorKind::kConflict, "job " + id + " is running: kill it first (or --force)");
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
  if (auto removed = remove_job_checkpoints(store_, id); !removed) return removed;
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
      return fail(ErrorKind::kInvalidInput,
                  "job " + id + " is not running (" + (*rec)->state + ")");
    if (!busy_.insert(id).second)
      return fail(ErrorKind::kConflict, "job " + id + " is already being checkpointed or restored");
  }
  Busy busy{this, id};
  auto t0 = std::chrono::steady_clock::now();
  auto out = checkpoint_job(id, req, {});
  double ms = ms_since(t0);
  if (out) {
    emit(id, "checkpointed", out->value("archive", out->value("checkpoint", "")), ms);
  } else {
    emit(id, "checkpoint-failed", out.error().message(), ms);
  }
  return out;
}

// The dump pipeline (its steps in jobs/job_checkpoint.h): check the export directory ->
// dump (a stopped job's exit is expected from here on) -> commit (failing that, the job is
// lost) -> export -> record where the checkpoint went.
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
    if (auto ok = check_export_dir(export_dir); !ok) return std::unexpected(ok.error());
  }
  auto dump =
      dump_job(store_, rec, {.leave_running = leave, .tcp_established = req.tcp_established});
  if (!dump) return std::unexpected(dump.error());
  if (!leave) mark_dumped(id, job_state::kCheckpointed, rec.pid);
  double dump_ms = dump->dump_ms();
  long when = dump->dumped_at();
  auto ref = commit_job_dump(store_, std::move(*dump));
  if (!ref) {
    if (!leave) mark_dumped(id, job_state::kLost, 0);
    return std::unexpected(ref.error());
  }
  json out = {{"checkpoint", ref->path},
              {"warnings", warnings},
              {"dump_ms", dump_ms},
              {"leave_running", leave}};
  if (!export_dir.empty()) {
    auto exported = export_job_checkpoint(ref->path, export_dir, rec.name, when,
                                          {config_.jobs.compress, config_.jobs.compression_level});
    if (!exported) {
      return std::unexpected(exported.error().wrap("job " + id + " is checkpointed in " +
                                                   ref->path + " but the export failed"));
    }
    ref->archive = exported->archive;
    out["archive"] = exported->archive;
    out["archive_bytes"] = exported->bytes;
    out["export_ms"] = exported->export_ms;
  }
  std::lock_guard lock(mutex_);
  jobs_[id].checkpoint = *ref;
  save_locked();
  out["job"] = jobs_[id];
  log_(LogLevel::kInfo, fmt::format("job {} ({}) checkpointed: {}{}", id, rec.name, ref->path,
                                    ref->archive.empty() ? "" : ", exported " + ref->archive));
  return out;
}

// A dump that stopped the job: its state (checkpointed; lost when the commit failed after
// all) and, when `root` is set, the root's exit expected rather than recorded.
void JobManager::mark_dumped(const std::string& id, const char* state, pid_t root) {
  std::lock_guard lock(mutex_);
  JobRecord& rec = jobs_[id];
  rec.state = state;
  if (root > 0) {
    rec.finished = now_seconds();
    reap_quietly_.insert(root);
  }
  save_locked();
}

// The job's log on this node, opened to be handed to the restored tree in place of the
// file it had open (`log_key`); none when the job has no log.
Result<UniqueFd> JobManager::open_log_for_restore(const JobRecord& rec,
                                                  const std::string& log_key) {
  if (rec.log.empty() || log_key.empty()) return UniqueFd();
  if (auto made = make_private_dirs(dirname_of(rec.log)); !made)
    return std::unexpected(made.error());
  auto fd = open_file(rec.log, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW, 0600);
  if (!fd) return std::unexpected(fd.error().wrap("job log"));
  return std::move(*fd);
}

// CRIU restore of `src` (once its pids are free), the log handed over, the root made our
// child and recorded as running.
Result<JobRecord> JobManager::restore_tree(JobRecord rec, const JobRestoreSource& src) {
  if (auto freed = wait_pids_free(pids_to_free(src.file(), rec.pid), 5s); !freed)
    return std::unexpected(freed.error());
  auto log_fd = open_log_for_restore(rec, src.file().log_key);
  if (!log_fd) return std::unexpected(log_fd.error());
  std::lock_guard lock(mutex_);  // The reaper must not see the child before its record.
  // CRIU's log of the last restore stays with a known job (the scratch copy goes).
  std::string keep_log = jobs_.contains(rec.id) && make_private_dirs(job_dir(rec.id))
                             ? job_dir(rec.id) + "/restore.log"
                             : "";
  auto pid = restore_job_tree(store_, src, log_fd->get(), keep_log);
  if (!pid) return std::unexpected(pid.error());
  rec.pid = *pid;
  // The job's stdout and stderr are now this node's log: the key of its next dump.
  if (*log_fd) rec.log_key = rec.log.substr(1);
  if (auto st = read_proc_stat(rec.pid)) rec.start_time = st->start_time;
  rec.state = job_state::kRunning;
  rec.exit_code = -1;
  rec.exit_signal = 0;
  rec.finished = 0;
  rec.started = now_seconds();
  ++rec.restores;
  jobs_[rec.id] = rec;
  save_locked();
  log_(LogLevel::kInfo, fmt::format("job {} ({}) restored: pid {}", rec.id, rec.name, rec.pid));
  return rec;
}

Result<JobRecord> JobManager::restore(const std::string& id_or_name, const std::string& archive) {
  auto t0 = std::chrono::steady_clock::now();
  auto rec = restore_one(id_or_name, archive);
  double ms = ms_since(t0);
  if (rec) {
    emit(rec->id, "restored",
         fmt::format("pid {}{}", rec->pid, archive.empty() ? "" : " from " + archive), ms);
  } else if (rec.error().kind() != ErrorKind::kNotFound) {
    emit(id_or_name, "restore-failed", rec.error().message(), ms);
  }
  return rec;
}

// A restore may start only for a job that is not running and not busy; it is marked busy.
Result<void> JobManager::claim_for_restore_locked(const JobRecord& rec) {
  if (rec.alive())
    return fail(ErrorKind::kConflict, "job " + rec.id + " is running: checkpoint or kill it first");
  if (!busy_.insert(rec.id).second)
    return fail(ErrorKind::kConflict, "job " + rec.id + " is being checkpointed or restored");
  return {};
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
    if (auto claimed = claim_for_restore_locked(rec); !claimed)
      return std::unexpected(claimed.error());
  }
  Busy busy{this, rec.id};
  auto src = open_stored_job(store_, rec.id);
  if (!src) return std::unexpected(src.error());
  auto restored = restore_tree(rec, *src);
  if (!restored)
    return std::unexpected(
        restored.error().wrap("restore job " + rec.id + " from " + src->origin()));
  return restored;
}

// An archive (or a checkpoint directory) from anywhere, imported and verified by the
// library (jobs/job_restore.h), then restored as the job it names: a job of this node when
// it has one by that id (or `id_hint`), else a new one. The import goes after.
Result<JobRecord> JobManager::restore_imported(const std::string& id_hint, const std::string& path,
                                               bool is_archive) {
  ByteProgress progress;
  if (is_archive) {
    std::lock_guard lock(imports_mutex_);
    if (!imports_.emplace(path, ImportProgress{}).second)
      return fail(ErrorKind::kConflict, path + " is being imported by another restore");
    progress = [this, path](uint64_t done, uint64_t total) {
      std::lock_guard held(imports_mutex_);
      imports_[path] = ImportProgress{done, total};
    };
  }
  auto imported = import_job(store_, path, is_archive, progress);
  if (is_archive) {
    std::lock_guard lock(imports_mutex_);
    imports_.erase(path);
  }
  auto& src = imported;
  if (!src) return std::unexpected(src.error());
  const JobRecord& from = src->file().job;
  JobRecord rec;
  {
    std::lock_guard lock(mutex_);
    std::string want = id_hint.empty() ? from.id : id_hint;
    auto found = find_locked(want);
    if (found) {
      rec = **found;
    } else if (!id_hint.empty() && id_hint != from.id) {
      return fail(ErrorKind::kNotFound,
                  "no job '" + id_hint + "' here, and " + path + " holds job " + from.id);
    } else {
      rec = from;  // As it was at the dump, when it was running there.
      rec.state = job_state::kCheckpointed;
      rec.log = rec.log.empty() ? "" : job_dir(rec.id) + "/output.log";
      rec.created = now_seconds();
      rec.checkpoint = {};
    }
    if (auto claimed = claim_for_restore_locked(rec); !claimed)
      return std::unexpected(claimed.error());
  }
  Busy busy{this, rec.id};
  rec.log_key = src->file().log_key;
  bool is_new = !get(rec.id);
  auto restored = restore_tree(rec, *src);
  if (!restored) {
    if (is_new) {  // Nothing of a job that never came to be is left behind.
      (void)remove_directory_contents(job_dir(rec.id));
      ::rmdir(job_dir(rec.id).c_str());
    }
    return std::unexpected(restored.error().wrap("restore " + path));
  }
  std::lock_guard lock(mutex_);
  JobRecord& r = jobs_[restored->id];
  r.checkpoint = {is_archive ? "" : path, src->manifest().created, is_archive ? path : ""};
  save_locked();
  return r;
}

json JobManager::imports() const {
  json list = json::array();
  std::lock_guard lock(imports_mutex_);
  for (const auto& [path, p] : imports_)
    list.push_back({{"archive", path}, {"done", p.done}, {"total", p.total}});
  return json{{"imports", std::move(list)}};
}

Result<json> JobManager::checkpoint_process(pid_t pid, const CheckpointRequest& req) {
  if (pid <= 1 || pid == ::getpid())
    return fail(ErrorKind::kInvalidInput, fmt::format("refusing to checkpoint pid {}", pid));
  auto adopted = adopted_process_record(pid, now_seconds());
  if (!adopted) return std::unexpected(adopted.error());
  std::vector<std::string> warnings = dump_warnings(pid);
  std::string id;
  {
    std::lock_guard lock(mutex_);
    for (auto& [jid, rec] : jobs_) {
      if (rec.alive() && rec.pid == pid) id = jid;
    }
    if (id.empty()) {
      id = adopted->id;
      jobs_[id] = *adopted;
    }
    if (!busy_.insert(id).second)
      return fail(ErrorKind::kConflict,
                  "process " + std::to_string(pid) + " is being checkpointed");
  }
  Busy busy{this, id};
  auto t0 = std::chrono::steady_clock::now();
  auto done = checkpoint_job(id, req, warnings);
  double ms = ms_since(t0);
  if (done) {
    emit(id, "checkpointed", done->value("archive", done->value("checkpoint", "")), ms);
  } else {
    emit(id, "checkpoint-failed", done.error().message(), ms);
  }
  if (!done) {
    std::string msg = done.error().message();
    for (const auto& w : warnings) msg += "\nwarning: " + w;
    std::lock_guard lock(mutex_);
    if (jobs_[id].kind == "process" && jobs_[id].checkpoint.path.empty()) jobs_.erase(id);
    return std::unexpected(Error(done.error().kind(), msg));
  }
  return done;
}

Result<JobRecord> JobManager::restore_process(const std::string& path) {
  struct stat st {};
  if (path.empty() || path.front() != '/')
    return fail(ErrorKind::kInvalidInput, "the path must be absolute");
  if (::stat(path.c_str(), &st) != 0) return fail(ErrorKind::kNotFound, path + " does not exist");
  auto t0 = std::chrono::steady_clock::now();
  auto rec = restore_imported("", path, S_ISREG(st.st_mode));
  double ms = ms_since(t0);
  if (rec) {
    emit(rec->id, "restored", fmt::format("pid {} from {}", rec->pid, path), ms);
  } else {
    emit("process", "restore-failed", rec.error().message(), ms);
  }
  return rec;
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

}  // namespace arch::agent
