// JobRestore: open or import a job checkpoint into a verified scratch copy, free its pids,
// restore it with CRIU.
#include "jobs/job_restore.h"

#include <fcntl.h>
#include <fmt/core.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <optional>
#include <set>
#include <thread>

#include "base/file_util.h"
#include "base/names.h"
#include "base/process.h"
#include "criu/criu_rpc.h"
#include "criu/criu_stream.h"
#include "jobs/job_launch.h"
#include "store/checkpoint_archive.h"
#include "store/checkpoint_store.h"
#include "store/seal.h"

namespace arch {

struct JobRestoreSource::State {
  State(CheckpointStore s, KeyLock l) : store(std::move(s)), lock(std::move(l)) {}
  State(const State&) = delete;
  State& operator=(const State&) = delete;
  // The scratch copy goes first, then (for an import) its key, then the lock.
  ~State() {
    scratch.reset();
    if (remove_key) (void)store.remove(kJobsNamespace, lock.key(), lock);
  }

  CheckpointStore store;
  KeyLock lock;
  std::optional<Staging> scratch;
  bool remove_key = false;
  JobCheckpointFile file;
  Manifest manifest;
  std::string origin;
};

namespace {

using namespace std::chrono_literals;

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

// Reaps our zombie children that belong to `ids` (their pid, session or process group is
// one of them: orphans of a job come back to a subreaper) and returns the first live
// process that does (0: none). A pid stays taken while any process still has it as its
// session or group id, so all of them must go before CRIU can reuse it.
pid_t reap_job_zombies(const std::set<pid_t>& ids) {
  pid_t self = ::getpid(), taken = 0;
  for_each_process([&](pid_t p, const ProcStat& st) {
    if (!(ids.contains(p) || ids.contains(st.sid) || ids.contains(st.pgid))) return;
    int status = 0;
    if (st.state == 'Z' && st.ppid == self && ::waitpid(p, &status, WNOHANG) == p) return;
    if (taken == 0) taken = p;
  });
  return taken;
}

// The unpacked (or linked) copy in `s`'s scratch directory, checked: manifest present and
// verified, a job checkpoint, job.json with a valid job. Every failure is EINVAL.
Result<void> check_import(JobRestoreSource::State& s, const std::string& path) {
  const std::string& dir = s.scratch->path();
  auto mtext = read_file(dir + "/" + kManifestFileName);
  if (!mtext)
    return fail(ErrorKind::kInvalidInput, path + " has no manifest.json: not an ARCH checkpoint");
  // Sealed by a node key this node holds, before anything in it is used.
  if (s.store.keys() == nullptr) {
    return fail(ErrorKind::kPermission,
                path + ": no node key to check its seal (create one with `archctl key init`)");
  }
  auto manifest = open_sealed_manifest(*mtext, *s.store.keys());
  if (!manifest) return fail(ErrorKind::kInvalidInput, path + ": " + manifest.error().message());
  // criu/restore.log is ours to write: only what the manifest lists must match.
  if (auto ok = verify_manifest(dir, *manifest); !ok)
    return fail(ErrorKind::kInvalidInput,
                path + " does not verify (damaged?): " + ok.error().message());
  if (manifest->ns != kJobsNamespace)
    return fail(ErrorKind::kInvalidInput,
                path + " is not a job checkpoint (namespace " + manifest->ns + ")");
  auto text = read_file(dir + "/" + kJobFileName);
  if (!text) return fail(ErrorKind::kInvalidInput, path + ": job.json is missing");
  auto file = parse_job_file(*text);
  if (!file) return fail(ErrorKind::kInvalidInput, path + ": " + file.error().text());
  if (!file->has_job) return fail(ErrorKind::kInvalidInput, path + ": job.json names no job");
  if (!validate_name("job id", file->job.id))
    return fail(ErrorKind::kInvalidInput, path + ": bad job id");
  s.manifest = std::move(*manifest);
  s.file = std::move(*file);
  return {};
}

}  // namespace

JobRestoreSource::JobRestoreSource(std::unique_ptr<State> state) : state_(std::move(state)) {}
JobRestoreSource::JobRestoreSource(JobRestoreSource&&) noexcept = default;
JobRestoreSource& JobRestoreSource::operator=(JobRestoreSource&&) noexcept = default;
JobRestoreSource::~JobRestoreSource() = default;

const std::string& JobRestoreSource::dir() const {
  return state_->scratch->path();
}
const JobCheckpointFile& JobRestoreSource::file() const {
  return state_->file;
}
const Manifest& JobRestoreSource::manifest() const {
  return state_->manifest;
}
const std::string& JobRestoreSource::origin() const {
  return state_->origin;
}

// From the store: lock the job's key -> newest verified generation -> job.json -> scratch
// copy beside it.
Result<JobRestoreSource> open_stored_job(const JobStoreConfig& config, const std::string& id) {
  CheckpointStore store(config.store_path, config.keep, config.keys);
  auto lock = store.lock(kJobsNamespace, id, 30s);
  if (!lock) return std::unexpected(lock.error().wrap("checkpoint store"));
  auto ckpt = store.latest_verified(kJobsNamespace, id, *lock);
  if (!ckpt) {
    if (ckpt.error().kind() == ErrorKind::kNotFound)
      return fail(ErrorKind::kNotFound, "job " + id + " has no checkpoint in " + config.store_path);
    return std::unexpected(ckpt.error());
  }
  auto text = read_file(ckpt->path + "/" + kJobFileName);
  if (!text) return std::unexpected(text.error().wrap("checkpoint " + ckpt->path));
  auto file = parse_job_file(*text);
  if (!file) return fail("checkpoint " + ckpt->path + ": " + file.error().text());
  auto s = std::make_unique<JobRestoreSource::State>(std::move(store), std::move(*lock));
  s->file = std::move(*file);
  s->manifest = ckpt->manifest;
  s->origin = ckpt->path;
  auto scratch = s->store.begin(s->lock);
  if (!scratch) return std::unexpected(scratch.error());
  s->scratch = std::move(*scratch);
  if (auto linked = link_tree(ckpt->path, s->scratch->path()); !linked)
    return std::unexpected(linked.error());
  return JobRestoreSource(std::move(s));
}

// From anywhere: lock a scratch key -> unpack (or link) -> check. The scratch key is
// removed with the source, also when a step fails.
Result<JobRestoreSource> import_job(const JobStoreConfig& config, const std::string& path,
                                    bool is_archive, const ByteProgress& progress) {
  CheckpointStore store(config.store_path, config.keep, config.keys);
  auto lock = store.lock(kJobsNamespace, "import-" + new_job_id(), 30s);
  if (!lock) return std::unexpected(lock.error().wrap("checkpoint store"));
  auto s = std::make_unique<JobRestoreSource::State>(std::move(store), std::move(*lock));
  s->remove_key = true;
  s->origin = path;
  auto scratch = s->store.begin(s->lock);
  if (!scratch) return std::unexpected(scratch.error());
  s->scratch = std::move(*scratch);
  ExpansionLimits caps{config.max_archive_bytes, config.max_entries};
  auto unpacked = is_archive ? import_archive(path, s->scratch->path(), caps, progress)
                             : link_tree(path, s->scratch->path());
  if (!unpacked) return fail(ErrorKind::kInvalidInput, unpacked.error().message());
  if (auto ok = check_import(*s, path); !ok) return std::unexpected(ok.error());
  return JobRestoreSource(std::move(s));
}

std::vector<pid_t> pids_to_free(const JobCheckpointFile& file, pid_t root) {
  std::vector<pid_t> pids = file.pids;
  if (root > 0) pids.push_back(root);
  return pids;
}

Result<void> wait_pids_free(const std::vector<pid_t>& pids, std::chrono::milliseconds timeout) {
  std::set<pid_t> ids(pids.begin(), pids.end());
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    pid_t taken = reap_job_zombies(ids);
    if (taken == 0) return {};
    if (std::chrono::steady_clock::now() > deadline) {
      auto argv = process_argv(taken);
      return fail(ErrorKind::kConflict,
                  fmt::format("pid {} ({}) still runs with a pid, session or process group "
                              "the checkpoint needs: CRIU restores a job with its original pids",
                              taken, argv.empty() ? "?" : join_argv(argv)));
    }
    std::this_thread::sleep_for(20ms);
  }
}

Result<pid_t> restore_job_tree(const JobStoreConfig& config, const JobRestoreSource& source,
                               int log_fd, const std::string& keep_log) {
  auto images = open_file(source.dir() + "/images", O_RDONLY | O_DIRECTORY);
  auto work = open_file(source.dir(), O_RDONLY | O_DIRECTORY);
  if (!images || !work) return std::unexpected((images ? work : images).error());
  if (std::string stream_id = manifest_stream_id(source.manifest()); !stream_id.empty()) {
    // Sealed image streams: served to `criu restore --stream`, each chunk verified first.
    CriuStreamRestoreOptions s;
    s.criu = config.criu;
    s.images_dirfd = images->get();
    s.work_dir = source.dir();
    s.log_file = "restore.log";
    s.stream_id = stream_id;
    s.shell_job = source.file().shell_job;
    s.tcp_established = source.file().tcp_established;
    s.file_locks = true;
    s.keys = config.keys.get();
    if (s.keys == nullptr) return fail("no node keys to open the streamed images");
    if (log_fd >= 0 && !source.file().log_key.empty())
      s.inherit_fds.emplace_back(source.file().log_key, log_fd);
    auto restored = criu_restore_streamed(s);
    if (!keep_log.empty()) {
      ::unlink(keep_log.c_str());
      (void)copy_file(source.dir() + "/restore.log", keep_log);
    }
    if (!restored) return std::unexpected(restored.error());
    return restored->first;
  }
  CriuRestoreOptions o;
  o.images_dir_fd = images->get();
  o.work_dir_fd = work->get();
  o.log_file = "restore.log";
  o.shell_job = source.file().shell_job;
  o.tcp_established = source.file().tcp_established;
  o.file_locks = true;
  if (log_fd >= 0 && !source.file().log_key.empty())
    o.inherit_fds.emplace_back(source.file().log_key, log_fd);
  auto pid = CriuRpc(config.criu).restore(o);
  if (!keep_log.empty()) {
    ::unlink(keep_log.c_str());
    (void)copy_file(source.dir() + "/restore.log", keep_log);
  }
  return pid;
}

}  // namespace arch
