// Lazy restore: the lazy-pages daemon's life (start, hand-off or kill) and the restore that
// tries lazily first and plainly second.
#include "criu/lazy_pages.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <optional>

#include "base/file_util.h"
#include "base/process.h"
#include "config/node_config.h"
#include "runtime/oci_spec.h"
#include "runtime/runc_client.h"

namespace arch {

bool lazy_restore_wanted(bool node_default, std::string_view container_env_value) {
  if (container_env_value == "1" || container_env_value == "true") return true;
  if (container_env_value == "0" || container_env_value == "false") return false;
  return node_default;
}

bool lazy_restore_wanted(const NodeConfig& config, const std::string& bundle) {
  auto env = read_arch_env(bundle);
  return lazy_restore_wanted(config.restore_lazy_pages,
                             env ? env->get("ARCH_LAZY_RESTORE") : std::string_view());
}

Result<std::string> find_criu(const std::string& configured) {
  if (!configured.empty()) return configured;
  const char* path = std::getenv("PATH");
  std::string dirs = path != nullptr && *path != '\0' ? path : "/usr/local/sbin:/usr/sbin:/sbin";
  for (std::size_t from = 0; from <= dirs.size();) {
    std::size_t to = dirs.find(':', from);
    if (to == std::string::npos) to = dirs.size();
    std::string dir = dirs.substr(from, to - from);
    if (!dir.empty() && dir.front() == '/') {
      std::string candidate = dir + "/criu";
      if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    }
    from = to + 1;
  }
  return fail("criu not found on PATH (set [runtime] criu)");
}

namespace {

constexpr const char* kPidFile = "lazy-pages.pid";
constexpr const char* kLogFile = "lazy-pages.log";

}  // namespace

Result<LazyPagesDaemon> LazyPagesDaemon::start(const std::string& criu, const std::string& images,
                                               const std::string& work, int page_server_fd) {
  std::string pid_file = work + "/" + kPidFile;
  (void)::unlink(pid_file.c_str());
  // --daemon: the parent returns once the socket listens; the daemon closes its stdio.
  std::vector<std::string> argv = {criu, "lazy-pages", "-D",       images,      "-W",    work,
                                   "-o", kLogFile,     "--daemon", "--pidfile", pid_file};
  ProcessOptions opts;
  opts.timeout = std::chrono::seconds(30);
  if (page_server_fd >= 0) {
    constexpr int kPsSocketFd = 10;  // the daemon's page-server socket, in the child
    argv.insert(argv.end(), {"--page-server", "--ps-socket", std::to_string(kPsSocketFd)});
    opts.inherit_fd = page_server_fd;
    opts.inherit_as = kPsSocketFd;
  }
  auto r = run_process(argv, opts);
  if (!r) return std::unexpected(r.error().wrap("start criu lazy-pages"));
  if (!r->ok()) {
    std::string excerpt = criu_log_excerpt(work + "/" + kLogFile);
    return fail(
        "criu lazy-pages: " +
        (r->timed_out ? std::string("timed out") : "exit status " + std::to_string(r->exit_code)) +
        (excerpt.empty() ? "" : "\n" + excerpt));
  }
  auto text = read_file(pid_file, 64);
  if (!text) return std::unexpected(text.error().wrap("criu lazy-pages: read its pid file"));
  pid_t pid = static_cast<pid_t>(std::atol(text->c_str()));
  if (pid <= 1) return fail("criu lazy-pages: bad pid file " + pid_file);
  auto pidfd = open_pidfd(pid);
  if (!pidfd) return fail("criu lazy-pages (pid " + std::to_string(pid) + ") ended at once");
  // The pidfd pins this pid; check it is still our daemon and not a recycled number.
  auto cmdline = read_file("/proc/" + std::to_string(pid) + "/cmdline", 1 << 16);
  if (!cmdline || cmdline->find("lazy-pages") == std::string::npos ||
      cmdline->find(work) == std::string::npos) {
    return fail("criu lazy-pages (pid " + std::to_string(pid) + ") ended at once");
  }
  struct stat st {};
  if (::stat((work + "/lazy-pages.socket").c_str(), &st) != 0 || !S_ISSOCK(st.st_mode)) {
    LazyPagesDaemon stray(pid, std::move(*pidfd));
    return fail("criu lazy-pages: no socket in " + work);
  }
  return LazyPagesDaemon(pid, std::move(*pidfd));
}

void LazyPagesDaemon::stop() {
  if (!pidfd_) return;
  (void)signal_pidfd(pidfd_.get(), SIGKILL);
  struct pollfd p {
    pidfd_.get(), POLLIN, 0
  };
  while (::poll(&p, 1, 5000) < 0 && errno == EINTR) {
  }
  pidfd_.reset();
}

std::string lazy_work_dir(const std::string& bundle) {
  return bundle + "/arch-restore/lazy";
}

Result<void> wait_for_lazy_pages(const std::string& bundle, std::chrono::milliseconds timeout) {
  std::string work = lazy_work_dir(bundle);
  auto text = read_file(work + "/" + kPidFile, 64);
  if (!text) return {};  // Never restored lazily.
  pid_t pid = static_cast<pid_t>(std::atol(text->c_str()));
  if (pid <= 1) return {};
  auto pidfd = open_pidfd(pid);
  if (!pidfd) return {};  // Gone.
  // Pinned by the pidfd: is it still our daemon (not a recycled pid, not a zombie)?
  auto cmdline = read_file("/proc/" + std::to_string(pid) + "/cmdline", 1 << 16);
  if (!cmdline || cmdline->find("lazy-pages") == std::string::npos ||
      cmdline->find(work) == std::string::npos) {
    return {};
  }
  struct pollfd p {
    pidfd->get(), POLLIN, 0
  };
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    int n = ::poll(&p, 1, static_cast<int>(std::max<long long>(0, left.count())));
    if (n > 0) return {};
    if (n == 0) break;
    if (errno != EINTR) return fail_errno("poll the lazy-pages daemon");
  }
  return fail("the lazy-pages daemon (pid " + std::to_string(pid) +
              ") is still putting the restored memory in place after " +
              std::to_string(timeout.count()) + " ms");
}

Result<RestoreMode> restore_maybe_lazily(const RuncClient& runc, const std::string& criu,
                                         const std::string& id, const std::string& images,
                                         const std::string& work,
                                         const std::vector<std::string>& flags,
                                         const std::string& log_file, bool lazy,
                                         const ServedPages* served) {
  RestoreMode mode;
  if (lazy) {
    // The lazy attempt has its own work dir, so its logs survive a fallback.
    std::string lazy_work = work + "/lazy";  // = lazy_work_dir(bundle) for restore.cc
    auto attempt = [&]() -> Result<void> {
      if (::mkdir(lazy_work.c_str(), 0700) != 0 && errno != EEXIST)
        return fail_errno("mkdir " + lazy_work);
      auto criu_path = find_criu(criu);
      if (!criu_path) return std::unexpected(criu_path.error());
      std::string restore_images = images;
      std::optional<PageServerProcess> server;
      UniqueFd daemon_end;
      if (served != nullptr) {
        // ARCH's page server: a private images directory, the pages verified as served.
        restore_images = lazy_work + "/images";
        (void)remove_directory_contents(restore_images);
        (void)::rmdir(restore_images.c_str());
        auto pages = prepare_served_images(*served, restore_images);
        if (!pages) return std::unexpected(pages.error().wrap("prepare the lazy images"));
        int sv[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
          return fail_errno("socketpair");
        UniqueFd server_end(sv[0]);
        daemon_end = UniqueFd(sv[1]);
        // Room for a whole answer (at most kMaxRequestPages pages) in the socket, so the
        // server writes it at once instead of waking the daemon every 200 KiB. Best effort
        // (FORCE needs CAP_NET_ADMIN): 1 GiB's pages were all in 9.8 s instead of 12.7 s.
        int room = static_cast<int>(2 * kMaxRequestPages * kCriuPageSize);
        (void)::setsockopt(sv[0], SOL_SOCKET, SO_SNDBUFFORCE, &room, sizeof room);
        (void)::setsockopt(sv[1], SOL_SOCKET, SO_RCVBUFFORCE, &room, sizeof room);
        auto started = PageServerProcess::start(std::move(*pages), std::move(server_end),
                                                lazy_work + "/page-server.log", served->on_refusal);
        if (!started) return std::unexpected(started.error().wrap("start the page server"));
        server.emplace(std::move(*started));
      }
      auto daemon = LazyPagesDaemon::start(*criu_path, restore_images, lazy_work,
                                           daemon_end ? daemon_end.get() : -1);
      daemon_end.reset();  // the daemon holds it now (or failed): EOF reaches the server
      if (!daemon) return std::unexpected(daemon.error());
      std::vector<std::string> lazy_flags = flags;
      lazy_flags.push_back("--lazy-pages");
      auto restored = runc.restore(id, restore_images, lazy_work, lazy_flags, log_file);
      if (!restored) return restored;  // ~LazyPagesDaemon, ~PageServerProcess kill them.
      if (server) {
        // The container goes before its page server does (~PageServerProcess).
        auto state = runc.state(id);
        auto handed =
            state ? server->hand_over(state->pid) : Result<void>(std::unexpected(state.error()));
        if (!handed) {
          (void)runc.delete_force(id);
          return std::unexpected(handed.error().wrap("hand the container to the page server"));
        }
        server->release();
      }
      daemon->release();
      return {};
    };
    auto done = attempt();
    if (done) {
      mode.lazy = true;
      mode.served = served != nullptr;
      return mode;
    }
    mode.lazy_failure = done.error().message();
    (void)runc.delete_force(id);  // runc may have left a half-made container behind.
    if (served != nullptr && served->verify_pages) {
      // A plain restore reads the pages images itself: hashed whole first.
      if (auto ok = served->verify_pages(); !ok) {
        return std::unexpected(ok.error().wrap("after a failed lazy restore (" + mode.lazy_failure +
                                               "), the pages images do not verify"));
      }
    }
  }
  auto restored = runc.restore(id, images, work, flags, log_file);
  if (!restored) {
    if (!mode.lazy_failure.empty())
      return std::unexpected(
          restored.error().wrap("after a failed lazy restore (" + mode.lazy_failure + ")"));
    return std::unexpected(restored.error());
  }
  return mode;
}

}  // namespace arch
