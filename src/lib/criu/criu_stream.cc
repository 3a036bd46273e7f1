// CriuStream: `criu dump|restore --stream` with ARCH's streamer sealing and opening each image
// as it passes. The restore leaves the tree stopped (--leave-stopped) until every image served
// has verified to its end; only then does it continue (SIGCONT), else it is killed: nothing
// restored from an image that failed to verify ever runs.
#include "criu/criu_stream.h"

#include <fcntl.h>
#include <fmt/core.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <mutex>
#include <thread>

#include "base/clock.h"
#include "base/file_util.h"
#include "base/process.h"
#include "criu/criu_rpc.h"
#include "criu/image_streamer.h"
#include "store/image_stream.h"

namespace arch {
namespace {

using Clock = std::chrono::steady_clock;
constexpr std::size_t kPipeBytes = 1 << 20;
constexpr int kInheritAs = 90;

std::vector<std::string> common_args(const CriuStreamCommon& o, const std::string& images_dir) {
  std::vector<std::string> argv = {"--stream", "-D", images_dir, "-W",
                                   o.work_dir, "-o", o.log_file, "-v4"};
  if (o.shell_job) argv.push_back("--shell-job");
  if (o.tcp_established) argv.push_back("--tcp-established");
  if (o.file_locks) argv.push_back("--file-locks");
  return argv;
}

Error criu_failed(const CriuStreamCommon& o, const char* what, const ProcessResult& r) {
  std::string errors;
  if (auto work = open_file(o.work_dir, O_RDONLY | O_DIRECTORY))
    errors = criu_log_errors(work->get(), o.log_file);
  if (errors.empty()) errors = r.err.substr(0, 2000);
  return Error(fmt::format("criu {} --stream failed (exit {}{}): {}", what, r.exit_code,
                           r.timed_out ? ", timed out" : "", errors));
}

// A pipe's size raised so CRIU and ARCH exchange large pieces (best effort).
void widen_pipe(int fd) {
  (void)::fcntl(fd, F_SETPIPE_SZ, static_cast<int>(kPipeBytes));
}

std::vector<pid_t> tree_of(pid_t root) {
  std::vector<pid_t> out = {root};
  for (std::size_t i = 0; i < out.size(); ++i) {
    std::string tasks = fmt::format("/proc/{}/task", out[i]);
    auto dir = open_file(tasks, O_RDONLY | O_DIRECTORY);
    if (!dir) continue;
    auto tids = list_directory(dir->get());
    if (!tids) continue;
    for (const auto& tid : *tids) {
      auto text = read_file(tasks + "/" + tid + "/children", 1 << 20);
      if (!text) continue;
      std::size_t pos = 0;
      while (pos < text->size()) {
        std::size_t end = text->find(' ', pos);
        if (end == std::string::npos) end = text->size();
        if (end > pos) out.push_back(std::stoi(text->substr(pos, end - pos)));
        pos = end + 1;
      }
    }
  }
  return out;
}

}  // namespace

std::string stored_image_name(std::string_view image) {
  return std::string(image) + std::string(kImageStreamSuffix);
}

Result<CriuStreamTotals> criu_dump_streamed(const CriuStreamDumpOptions& o) {
  if (o.key == nullptr) return fail("criu dump --stream: no node key to seal with");
  auto socket = StreamerSocket::create(true);
  if (!socket) return std::unexpected(socket.error());
  std::mutex mutex;
  CriuStreamTotals totals;
  ImageConsumer consume = [&](const std::string& name, int pipe_fd) -> Result<uint64_t> {
    widen_pipe(pipe_fd);
    std::string file = stored_image_name(name);
    UniqueFd out(::openat(o.images_dirfd, file.c_str(),
                          O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!out) return fail_errno("create " + file);
    auto writer = ImageStreamWriter::create(out.get(), *o.key, o.stream_id, name, o.compression);
    if (!writer) return std::unexpected(writer.error());
    std::string buf(kPipeBytes, '\0');
    for (;;) {
      ssize_t n = ::read(pipe_fd, buf.data(), buf.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return fail_errno("read from CRIU");
      if (n == 0) break;
      if (auto ok = writer->write(std::string_view(buf.data(), static_cast<std::size_t>(n))); !ok) {
        return std::unexpected(ok.error());
      }
    }
    auto stats = writer->finish();
    if (!stats) return std::unexpected(stats.error());
    std::lock_guard lock(mutex);
    totals.plain_bytes += stats->plain_bytes;
    totals.stored_bytes += stats->stored_bytes;
    totals.images += 1;
    totals.chunks += stats->chunks;
    totals.compressed_chunks += stats->compressed_chunks;
    totals.files.push_back({file, stats->stored_bytes, stats->sha256});
    return stats->plain_bytes;
  };
  Result<std::vector<StreamedImage>> captured = std::vector<StreamedImage>();
  std::thread streamer([&] { captured = capture_images(*socket, consume); });

  std::vector<std::string> argv = {o.criu, "dump", "-t", std::to_string(o.pid)};
  auto common = common_args(o, socket->dir());
  argv.insert(argv.end(), common.begin(), common.end());
  if (o.leave_running) argv.push_back("--leave-running");
  if (o.ghost_limit > 0) argv.insert(argv.end(), {"--ghost-limit", std::to_string(o.ghost_limit)});
  auto start = Clock::now();
  auto r = run_process(argv, {.stdin_fd = -1,
                              .stdout_fd = -1,
                              .stderr_fd = -1,
                              .timeout = o.timeout,
                              .cwd = {},
                              .inherit_fd = -1,
                              .inherit_as = -1});
  socket->cancel();
  streamer.join();
  totals.criu_ms = ms_since(start);
  if (!r) return std::unexpected(r.error().wrap("start criu"));
  if (!r->ok()) return std::unexpected(criu_failed(o, "dump", *r));
  if (!captured) return std::unexpected(captured.error().wrap("criu dump --stream"));
  if (captured->empty()) return fail("criu dump --stream: CRIU streamed no image");
  return totals;
}

Result<std::pair<pid_t, CriuStreamTotals>> criu_restore_streamed(
    const CriuStreamRestoreOptions& o) {
  if (o.keys == nullptr) return fail("criu restore --stream: no node keys to verify with");
  if (o.inherit_fds.size() > 1) return fail("criu restore --stream: at most one inherited fd");
  auto socket = StreamerSocket::create(false);
  if (!socket) return std::unexpected(socket.error());
  std::mutex mutex;
  CriuStreamTotals totals;
  ImageExists exists = [&](const std::string& name) {
    struct stat st {};
    return ::fstatat(o.images_dirfd, stored_image_name(name).c_str(), &st, AT_SYMLINK_NOFOLLOW) ==
               0 &&
           S_ISREG(st.st_mode);
  };
  ImageProducer produce = [&](const std::string& name, int pipe_fd) -> Result<uint64_t> {
    widen_pipe(pipe_fd);
    std::string file = stored_image_name(name);
    UniqueFd in(::openat(o.images_dirfd, file.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!in) return fail_errno("open " + file);
    bool closed_by_criu = false;
    auto stats = read_image_stream(in.get(), *o.keys, o.stream_id, name,
                                   [&](std::string_view plain) -> Result<void> {
                                     if (closed_by_criu) return {};
                                     auto ok = write_all(pipe_fd, plain);
                                     // CRIU read what it needed; the rest still verifies.
                                     if (!ok && ok.error().code() == EPIPE) closed_by_criu = true;
                                     return closed_by_criu ? Result<void>() : ok;
                                   });
    if (!stats) return std::unexpected(stats.error());
    std::lock_guard lock(mutex);
    totals.plain_bytes += stats->plain_bytes;
    totals.stored_bytes += stats->stored_bytes;
    totals.images += 1;
    totals.chunks += stats->chunks;
    totals.compressed_chunks += stats->compressed_chunks;
    return stats->plain_bytes;
  };
  Result<std::vector<StreamedImage>> served = std::vector<StreamedImage>();
  std::thread streamer([&] { served = serve_images(*socket, exists, produce); });

  std::string pidfile = o.work_dir + "/restore.pid";
  ::unlink(pidfile.c_str());
  std::vector<std::string> argv = {o.criu, "restore"};
  auto common = common_args(o, socket->dir());
  argv.insert(argv.end(), common.begin(), common.end());
  argv.insert(argv.end(),
              {"--restore-detached", "--restore-sibling", "--leave-stopped", "--pidfile", pidfile});
  ProcessOptions po{.stdin_fd = -1,
                    .stdout_fd = -1,
                    .stderr_fd = -1,
                    .timeout = o.timeout,
                    .cwd = {},
                    .inherit_fd = -1,
                    .inherit_as = -1};
  if (!o.inherit_fds.empty()) {
    po.inherit_fd = o.inherit_fds[0].second;
    po.inherit_as = kInheritAs;
    argv.insert(argv.end(),
                {"--inherit-fd", fmt::format("fd[{}]:{}", kInheritAs, o.inherit_fds[0].first)});
  }
  auto start = Clock::now();
  auto r = run_process(argv, po);
  socket->cancel();
  streamer.join();
  totals.criu_ms = ms_since(start);
  if (!r) return std::unexpected(r.error().wrap("start criu"));
  pid_t root = 0;
  if (auto text = read_file(pidfile, 64)) root = static_cast<pid_t>(std::atol(text->c_str()));
  if (!r->ok() || !served || served->empty() || root <= 0) {
    // Stopped, never continued: whatever CRIU restored goes without running.
    if (root > 0) {
      for (pid_t p : tree_of(root)) ::kill(p, SIGKILL);
      int status = 0;
      ::waitpid(root, &status, 0);
    }
    if (!served) return std::unexpected(served.error().wrap("criu restore --stream (refused)"));
    if (!r->ok()) return std::unexpected(criu_failed(o, "restore", *r));
    return fail("criu restore --stream: no restored process (CRIU read no image)");
  }
  // Every image served verified to its end: let the tree run.
  for (pid_t p : tree_of(root)) ::kill(p, SIGCONT);
  return std::pair{root, totals};
}

}  // namespace arch
