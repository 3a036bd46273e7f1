// Process: fork/exec with pipes for stdout/stderr, poll-driven capture, deadline, reaping.
#include "base/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "base/file_util.h"
#include "base/unique_fd.h"

namespace arch {
namespace {

Result<std::pair<UniqueFd, UniqueFd>> make_pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return fail_errno("pipe2");
  return std::pair{UniqueFd(fds[0]), UniqueFd(fds[1])};
}

// In the child: only async-signal-safe calls until exec.
[[noreturn]] void exec_child(const std::vector<const char*>& argv, int in, int out, int err,
                             const char* cwd, int extra = -1, int extra_as = -1) {
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  // The extra fd first goes above every fd the plan names, so no dup2 below clobbers it.
  if (extra >= 0 && (extra = ::fcntl(extra, F_DUPFD_CLOEXEC, std::max(extra_as, 3) + 1)) < 0)
    ::_exit(127);
  if (::dup2(in, 0) < 0 || ::dup2(out, 1) < 0 || ::dup2(err, 2) < 0) ::_exit(127);
  if (cwd != nullptr && ::chdir(cwd) != 0) ::_exit(127);
  if (extra >= 0) {
    if (::dup2(extra, extra_as) < 0) ::_exit(127);  // dup2 clears O_CLOEXEC on extra_as
    ::close_range(3, static_cast<unsigned>(extra_as) - 1, 0);
    ::close_range(static_cast<unsigned>(extra_as) + 1, ~0U, 0);
  } else {
    ::close_range(3, ~0U, 0);  // The fd plan is exactly 0, 1, 2.
  }
  ::execv(argv[0], const_cast<char* const*>(argv.data()));
  ::_exit(127);
}

int exit_code_of(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

}  // namespace

Result<UniqueFd> open_pidfd(pid_t pid) {
  int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) return fail_errno("pidfd_open " + std::to_string(pid));
  return UniqueFd(fd);
}

Result<void> signal_pidfd(int pidfd, int sig) {
  if (::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0) != 0 && errno != ESRCH) {
    return fail_errno("pidfd_send_signal " + std::to_string(sig));
  }
  return {};
}

Result<pid_t> spawn_detached(const std::vector<std::string>& argv, int stdin_fd) {
  if (argv.empty() || argv[0].empty() || argv[0].front() != '/') {
    return fail("spawn: argv[0] must be an absolute path");
  }
  auto devnull = open_file("/dev/null", O_RDWR);
  if (!devnull) return std::unexpected(devnull.error());
  std::vector<const char*> cargv;
  for (const auto& a : argv) cargv.push_back(a.c_str());
  cargv.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) return fail_errno("fork " + argv[0]);
  if (pid == 0) {
    ::setsid();  // Outlives a Ctrl-C or a kill of our process group.
    exec_child(cargv, stdin_fd, devnull->get(), devnull->get(), nullptr);
  }
  return pid;
}

Result<void> watch_exit(pid_t pid, const std::function<void()>& then) {
  // A pidfd (close-on-exec) becomes readable when `pid` exits, whoever its parent is.
  UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (!pidfd) return fail_errno("pidfd_open " + std::to_string(pid));
  pid_t child = ::fork();
  if (child < 0) return fail_errno("fork");
  if (child == 0) {
    if (::fork() != 0) ::_exit(0);  // The watcher is the grandchild, reparented at once.
    ::setsid();
    int keep = pidfd.get() >= 3 ? pidfd.get() : ::fcntl(pidfd.get(), F_DUPFD_CLOEXEC, 3);
    int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    for (int fd = 0; fd < 3; ++fd) ::dup2(null, fd);
    if (keep > 3) ::syscall(SYS_close_range, 3U, static_cast<unsigned>(keep - 1), 0U);
    ::syscall(SYS_close_range, static_cast<unsigned>(keep + 1), ~0U, 0U);
    pollfd p{keep, POLLIN, 0};
    while (::poll(&p, 1, -1) < 0 && errno == EINTR) {
    }
    then();
    ::_exit(0);
  }
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  return {};
}

std::string join_argv(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& a : argv) {
    if (!out.empty()) out += ' ';
    out += a;
  }
  return out;
}

Result<ProcessResult> run_process(const std::vector<std::string>& argv,
                                  const ProcessOptions& options) {
  if (argv.empty() || argv[0].empty() || argv[0].front() != '/') {
    return fail("run_process: argv[0] must be an absolute path");
  }
  auto devnull = open_file("/dev/null", O_RDWR);
  if (!devnull) return std::unexpected(devnull.error());
  auto out_pipe = make_pipe();
  auto err_pipe = make_pipe();
  if (!out_pipe || !err_pipe) return std::unexpected((out_pipe ? err_pipe : out_pipe).error());

  std::vector<const char*> cargv;
  for (const auto& a : argv) cargv.push_back(a.c_str());
  cargv.push_back(nullptr);
  int in = options.stdin_fd >= 0 ? options.stdin_fd : devnull->get();
  int out = options.stdout_fd >= 0 ? options.stdout_fd : out_pipe->second.get();
  int err = options.stderr_fd >= 0 ? options.stderr_fd : err_pipe->second.get();
  const char* cwd = options.cwd.empty() ? nullptr : options.cwd.c_str();

  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) return fail_errno("fork " + argv[0]);
  if (pid == 0) {
    // Dies with us: a runc or CRIU call must not go on (and, say, freeze a container)
    // after the ARCH process that started it was killed.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    exec_child(cargv, in, out, err, cwd, options.inherit_as >= 3 ? options.inherit_fd : -1,
               options.inherit_as);
  }
  out_pipe->second.reset();
  err_pipe->second.reset();

  ProcessResult result;
  auto deadline = options.timeout ? std::chrono::steady_clock::now() + *options.timeout
                                  : std::chrono::steady_clock::time_point::max();
  std::vector<pollfd> fds = {{out_pipe->first.get(), POLLIN, 0},
                             {err_pipe->first.get(), POLLIN, 0}};
  std::string* sinks[] = {&result.out, &result.err};
  int open_streams = 2;
  while (open_streams > 0) {
    int wait_ms = -1;
    if (options.timeout) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      wait_ms = static_cast<int>(std::max<long>(0, left.count()));
    }
    int n = retry_eintr([&] { return ::poll(fds.data(), fds.size(), wait_ms); });
    if (n == 0) {
      result.timed_out = true;
      ::kill(pid, SIGKILL);
      break;
    }
    for (std::size_t i = 0; i < fds.size(); ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      char buf[8192];
      ssize_t got = retry_eintr([&] { return ::read(fds[i].fd, buf, sizeof buf); });
      if (got > 0) {
        sinks[i]->append(buf, static_cast<std::size_t>(got));
      } else {
        fds[i].fd = -1;
        --open_streams;
      }
    }
  }
  int status = 0;
  if (retry_eintr([&] { return ::waitpid(pid, &status, 0); }) < 0) return fail_errno("waitpid");
  result.exit_code = exit_code_of(status);
  return result;
}

}  // namespace arch
