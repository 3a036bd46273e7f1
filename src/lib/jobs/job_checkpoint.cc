// JobCheckpoint: dump a job's process tree with CRIU into the store, commit it under a
// manifest, export it as an archive.
#include "jobs/job_checkpoint.h"

#include <fcntl.h>
#include <fmt/core.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <ctime>

#include "base/clock.h"
#include "base/file_util.h"
#include "base/host.h"
#include "config/node_config.h"
#include "container/deadline_plan.h"
#include "criu/criu_errors.h"
#include "criu/criu_rpc.h"
#include "criu/criu_stream.h"
#include "jobs/job_launch.h"
#include "store/image_stream.h"

namespace arch {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

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

Result<UniqueFd> open_subdir(int dirfd, const char* name) {
  UniqueFd fd(::openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) return fail_errno(std::string("open staging directory ") + name);
  return fd;
}

// CRIU's dump of `job` into `staging`'s images/ (its log in criu/dump.log).
Result<void> criu_dump(const JobStoreConfig& config, const Staging& staging, const JobRecord& job,
                       const JobCheckpointFile& file, bool leave_running) {
  for (const char* sub : {"images", "criu"}) {
    if (auto r = make_dir(staging.dirfd(), sub); !r) return r;
  }
  auto images = open_subdir(staging.dirfd(), "images");
  if (!images) return std::unexpected(images.error());
  auto work = open_subdir(staging.dirfd(), "criu");
  if (!work) return std::unexpected(work.error());
  CriuDumpOptions o;
  o.pid = job.pid;
  o.images_dir_fd = images->get();
  o.work_dir_fd = work->get();
  o.log_file = "dump.log";
  o.leave_running = leave_running;
  o.shell_job = file.shell_job;
  o.tcp_established = file.tcp_established;
  o.file_locks = true;
  o.ghost_limit = config.ghost_limit;
  return CriuRpc(config.criu).dump(o);
}

// The same dump through ARCH's image streamer: each image sealed into images/<name>.arch as
// CRIU writes it (criu/criu_stream.h).
Result<CriuStreamTotals> criu_dump_streamed(const JobStoreConfig& config, const Staging& staging,
                                            const JobRecord& job, const JobCheckpointFile& file,
                                            bool leave_running, const std::string& stream_id,
                                            double store_bps) {
  if (config.keys == nullptr || config.keys->active() == nullptr)
    return fail("no node key to seal the streamed images (archctl key init)");
  for (const char* sub : {"images", "criu"}) {
    if (auto r = make_dir(staging.dirfd(), sub); !r) return std::unexpected(r.error());
  }
  auto images = open_subdir(staging.dirfd(), "images");
  if (!images) return std::unexpected(images.error());
  CriuStreamDumpOptions o;
  o.criu = config.criu;
  o.images_dirfd = images->get();
  o.work_dir = staging.path() + "/criu";
  o.log_file = "dump.log";
  o.stream_id = stream_id;
  o.shell_job = file.shell_job;
  o.tcp_established = file.tcp_established;
  o.file_locks = true;
  o.pid = job.pid;
  o.leave_running = leave_running;
  o.ghost_limit = config.ghost_limit;
  o.key = config.keys->active();
  auto mode = parse_stream_compression(config.stream_compression);
  if (!mode) return std::unexpected(mode.error());
  o.compression = {.mode = *mode,
                   .level = config.stream_compression_level,
                   .store_bps = store_bps,
                   .workers = 0};
  return arch::criu_dump_streamed(o);
}

// A streamed dump's bytes per second of dump and commit: the store's rate, kept for the next
// dump's compression level (and the deadline planner). A dump with compressed chunks may
// have been bound by the compressor, so its rate is only a lower bound of the store's: kept
// only when it raises the rate already kept (never lowering it, which would compress more).
void record_stream_rate(const JobStoreConfig& config, uint64_t stored, bool compressed,
                        double kept_bps, double ms) {
  if (config.state_dir.empty() || stored < kMinRateSampleBytes || ms <= 0) return;
  double bps = static_cast<double>(stored) * 1000 / ms;
  if (compressed && !(kept_bps > 0 && bps > kept_bps)) return;
  (void)record_store_rates(config.state_dir, config.store_path, bps, 0);
}

}  // namespace

JobStoreConfig job_store_config(const NodeConfig& config) {
  JobStoreConfig c{config.store_path,
                   config.keep,
                   config.criu,
                   shared_node_keyring(config),
                   config.limits.max_archive_bytes,
                   config.limits.max_entries,
                   config.checkpoint.ghost_limit,
                   config.checkpoint.failed_dumps_kept,
                   config.jobs.stream_images,
                   config.jobs.stream_compression,
                   config.jobs.stream_compression_level,
                   config.state_dir};
  if (!c.criu.empty()) return c;
  c.criu = "/usr/sbin/criu";
  for (const char* p : {"/opt/arch/criu/bin/criu", "/usr/local/sbin/criu"}) {
    if (::access(p, X_OK) == 0) {
      c.criu = p;
      break;
    }
  }
  return c;
}

json job_file_json(const JobCheckpointFile& file) {
  return {{"job", file.job},
          {"shell_job", file.shell_job},
          {"tcp_established", file.tcp_established},
          {"pids", file.pids},
          {"log_key", file.log_key}};
}

Result<JobCheckpointFile> parse_job_file(std::string_view text) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return fail(ErrorKind::kInvalidInput, "job.json is not JSON");
  JobCheckpointFile f;
  try {
    f.has_job = j.contains("job");
    if (f.has_job) f.job = j.at("job").get<JobRecord>();
    f.shell_job = j.value("shell_job", false);
    f.tcp_established = j.value("tcp_established", false);
    f.pids = j.value("pids", std::vector<pid_t>{});
    f.log_key = j.value("log_key", "");
  } catch (const json::exception& e) {
    return fail(ErrorKind::kInvalidInput, std::string("job.json: ") + e.what());
  }
  return f;
}

// The dump: process check -> lock key -> staging -> CRIU dump (the tree stops here unless
// left running).
Result<JobDump> dump_job(const JobStoreConfig& config, const JobRecord& job,
                         const JobDumpRequest& request) {
  auto st = read_proc_stat(job.pid);
  if (!st || st->start_time != job.start_time || st->state == 'Z')
    return fail(ErrorKind::kInvalidInput,
                fmt::format("job {}: process {} is gone", job.id, job.pid));
  JobCheckpointFile file{.job = job,
                         .has_job = true,
                         .shell_job = st->sid != job.pid,
                         .tcp_established = request.tcp_established,
                         .pids = process_tree(job.pid),
                         .log_key = job.log_key};

  CheckpointStore store(config.store_path, config.keep, config.keys);
  auto lock = store.lock(kJobsNamespace, job.id, 30s);
  if (!lock) return std::unexpected(lock.error().wrap("checkpoint store"));
  (void)store.cleanup_stale(*lock);
  auto staging = store.begin(*lock);
  if (!staging) return std::unexpected(staging.error());

  auto t0 = std::chrono::steady_clock::now();
  std::string stream_id;
  CriuStreamTotals streamed;
  Result<void> dumped;
  double store_bps = 0;
  if (config.stream_images) {
    auto id = new_stream_id();
    if (!id) return std::unexpected(id.error());
    stream_id = *id;
    if (!config.state_dir.empty())
      store_bps = load_store_rates(config.state_dir, config.store_path).single_bps;
    auto totals = criu_dump_streamed(config, *staging, job, file, request.leave_running, stream_id,
                                     store_bps);
    if (totals) {
      streamed = *totals;
    } else {
      dumped = std::unexpected(totals.error());
    }
  } else {
    dumped = criu_dump(config, *staging, job, file, request.leave_running);
  }
  if (!dumped) {
    // As for containers: CRIU's log is kept in the store as failed-<time>/dump-logs/
    // (bounded), listed by `archctl checkpoint list`.
    Error e = dumped.error().wrap("checkpoint job " + job.id + " (it keeps running)");
    std::vector<std::pair<std::string, std::string>> files;
    if (auto log = read_file(staging->path() + "/criu/dump.log", 256 << 20); log && !log->empty())
      files.emplace_back("dump.log", criu_log_tail(*log));
    const std::string& m = e.message();
    auto kept = store.keep_failed_dump(std::move(*staging), m.substr(0, m.find('\n')), files,
                                       config.failed_dumps_kept, *lock);
    if (kept && !kept->empty())
      return std::unexpected(Error(e.kind(), m + "\nCRIU's log kept in " + *kept));
    return std::unexpected(e);
  }
  JobDump dump(std::move(store), std::move(*lock), std::move(*staging));
  dump.dump_ms_ = ms_since(t0);
  dump.dumped_at_ = static_cast<long>(std::time(nullptr));
  dump.file_ = std::move(file);
  dump.leave_running_ = request.leave_running;
  dump.stream_id_ = stream_id;
  dump.stream_plain_ = streamed.plain_bytes;
  dump.stream_stored_ = streamed.stored_bytes;
  dump.stream_chunks_ = streamed.chunks;
  dump.stream_compressed_ = streamed.compressed_chunks;
  dump.store_bps_ = store_bps;
  for (auto& f : streamed.files) {
    f.path = "images/" + f.path;
    dump.stream_files_.push_back(std::move(f));
  }
  return dump;
}

// The commit: job.json -> manifest -> rename into place.
Result<JobCheckpointRef> commit_job_dump(const JobStoreConfig& config, JobDump&& dump) {
  const JobRecord& job = dump.file_.job;
  Manifest m;
  m.ns = kJobsNamespace;
  m.key = job.id;
  m.container_id = job.id;
  m.node = host_name();
  m.image = job.argv.empty() ? "" : job.argv[0];
  m.created = format_utc(dump.dumped_at_);
  if (auto v = CriuRpc(config.criu).version()) m.versions.criu = v->text();
  m.versions.kernel = kernel_release();
  m.timings_ms["dump"] = dump.dump_ms_;
  m.extra = {{"kind", job.kind}, {"name", job.name}, {"leave_running", dump.leave_running_}};
  if (!dump.stream_id_.empty()) {
    m.encryption = stream_encryption(dump.stream_id_);
    m.files = dump.stream_files_;  // hashed as they were written: not read again
    m.extra["image_stream"] = {{"image_bytes", dump.stream_plain_},
                               {"stored_bytes", dump.stream_stored_},
                               {"chunks", dump.stream_chunks_},
                               {"compressed_chunks", dump.stream_compressed_},
                               {"compression", config.stream_compression}};
  }
  auto commit_start = std::chrono::steady_clock::now();
  auto wrote =
      write_at(dump.staging_.dirfd(), kJobFileName, job_file_json(dump.file_).dump(2) + "\n");
  Result<std::string> committed = wrote
                                      ? dump.store_.commit(std::move(dump.staging_), m, dump.lock_)
                                      : std::unexpected(wrote.error());
  if (!committed) {
    return std::unexpected(committed.error().wrap(
        dump.leave_running_ ? "checkpoint job " + job.id + " (it keeps running)"
                            : "checkpoint job " + job.id +
                                  ": the dump stopped the job but it could not be committed"));
  }
  if (!dump.stream_id_.empty()) {
    record_stream_rate(config, dump.stream_stored_, dump.stream_compressed_ > 0, dump.store_bps_,
                       dump.dump_ms_ + ms_since(commit_start));
  }
  return JobCheckpointRef{*committed, m.created, ""};
}

Result<void> remove_job_checkpoints(const JobStoreConfig& config, const std::string& id) {
  if (::access((config.store_path + "/" + kJobsNamespace + "/" + id).c_str(), F_OK) != 0) return {};
  CheckpointStore store(config.store_path, config.keep, config.keys);
  auto lock = store.lock(kJobsNamespace, id, 30s);
  if (!lock) return std::unexpected(lock.error());
  return store.remove(kJobsNamespace, id, *lock);
}

Result<void> check_export_dir(const std::string& dir) {
  struct stat st {};
  if (dir.empty() || dir.front() != '/')
    return fail(ErrorKind::kInvalidInput, "export directory must be absolute");
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return fail(ErrorKind::kInvalidInput, "export directory " + dir + " does not exist");
  return {};
}

Result<JobExport> export_job_checkpoint(const std::string& ckpt, const std::string& dir,
                                        std::string_view name, long when,
                                        const ExportOptions& options) {
  JobExport out;
  out.archive = dir + "/" + archive_file_name(name, when, options.compress);
  auto t0 = std::chrono::steady_clock::now();
  auto bytes = export_checkpoint(ckpt, out.archive, options);
  if (!bytes) return std::unexpected(bytes.error());
  out.bytes = *bytes;
  out.export_ms = ms_since(t0);
  return out;
}

}  // namespace arch
