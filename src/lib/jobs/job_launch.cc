// JobLaunch: fork/exec of a job with an explicit fd plan, and /proc readers.
#include "jobs/job_launch.h"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/core.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <set>

#include "base/file_util.h"
#include "base/unique_fd.h"

namespace arch {
namespace {

[[noreturn]] void die_with(int status, int err) {
  ssize_t ignored = ::write(status, &err, sizeof err);
  (void)ignored;
  ::_exit(127);
}

// The child: new session, fds 0/1/2, cwd, default signals, exec. Async-signal-safe only.
// A failure is reported as its errno on `status` (close-on-exec: EOF means exec worked).
[[noreturn]] void exec_job(const char* program, char* const* argv, char* const* envp, int in,
                           int log, int cwd_fd, int status) {
  auto die = [status](int err) { die_with(status, err); };
  if (::setsid() < 0) die(errno);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  for (int s = 1; s < NSIG; ++s) ::signal(s, SIG_DFL);
  if (::dup2(in, 0) < 0 || ::dup2(log, 1) < 0 || ::dup2(log, 2) < 0) die(errno);
  if (::fchdir(cwd_fd) != 0) die(errno);
  if (status <= 2 || ::dup2(status, 3) < 0 || ::fcntl(3, F_SETFD, FD_CLOEXEC) < 0) die(errno);
  ::close_range(4, ~0U, 0);
  ::execve(program, argv, envp);
  die_with(3, errno);
}

bool executable_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0;
}

std::string env_value(const std::vector<std::string>& env, std::string_view key) {
  for (const auto& e : env) {
    if (e.size() > key.size() && e.compare(0, key.size(), key) == 0 && e[key.size()] == '=')
      return e.substr(key.size() + 1);
  }
  return "";
}

}  // namespace

Result<std::string> resolve_program(const std::string& argv0, const std::string& path_var,
                                    const std::string& cwd) {
  if (argv0.empty()) return fail("empty command");
  if (argv0.find('/') != std::string::npos) {
    std::string p = argv0.front() == '/' ? argv0 : cwd + "/" + argv0;
    if (!executable_file(p)) return fail("'" + argv0 + "' is not an executable file");
    return p;
  }
  std::string path = path_var.empty() ? "/usr/local/bin:/usr/bin:/bin" : path_var;
  std::size_t start = 0;
  while (start <= path.size()) {
    auto colon = path.find(':', start);
    std::string dir =
        path.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
    if (dir.empty()) dir = ".";
    std::string candidate = (dir.front() == '/' ? dir : cwd + "/" + dir) + "/" + argv0;
    if (executable_file(candidate)) return candidate;
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  return fail("'" + argv0 + "' not found in PATH (" + path + ")");
}

Result<pid_t> launch_job(const JobLaunchSpec& spec) {
  if (spec.argv.empty()) return fail("no command");
  if (spec.cwd.empty() || spec.cwd.front() != '/')
    return fail("the job's directory must be absolute");
  auto program = resolve_program(spec.argv[0], env_value(spec.env, "PATH"), spec.cwd);
  if (!program) return std::unexpected(program.error());
  auto cwd = open_file(spec.cwd, O_RDONLY | O_DIRECTORY);
  if (!cwd) return std::unexpected(cwd.error().wrap("job directory"));
  auto devnull = open_file("/dev/null", O_RDONLY);
  if (!devnull) return std::unexpected(devnull.error());
  auto log = open_file(spec.log_path, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW, 0600);
  if (!log) return std::unexpected(log.error().wrap("job log"));

  std::vector<char*> argv, envp;
  for (const auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const auto& e : spec.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  int status_pipe[2];
  if (::pipe2(status_pipe, O_CLOEXEC) != 0) return fail_errno("pipe2");
  UniqueFd status_read(status_pipe[0]), status_write(status_pipe[1]);
  pid_t pid = ::fork();
  if (pid < 0) return fail_errno("fork job");
  if (pid == 0) {
    exec_job(program->c_str(), argv.data(), envp.data(), devnull->get(), log->get(), cwd->get(),
             status_write.get());
  }
  status_write.reset();
  // Returns once the child has exec'd (so its session exists) or failed to.
  int err = 0;
  ssize_t n = retry_eintr([&] { return ::read(status_read.get(), &err, sizeof err); });
  if (n == sizeof err) {
    int ignored = 0;
    ::waitpid(pid, &ignored, 0);
    errno = err;
    return fail_errno("start " + *program);
  }
  return pid;
}

Result<ProcStat> read_proc_stat(pid_t pid) {
  auto text = read_file(fmt::format("/proc/{}/stat", pid), 4096);
  if (!text) return std::unexpected(text.error());
  // "pid (comm) S ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime
  //  stime cutime cstime priority nice num_threads itrealvalue starttime ..."
  auto close = text->rfind(')');
  if (close == std::string::npos) return fail("malformed /proc/" + std::to_string(pid) + "/stat");
  std::vector<std::string> f;
  std::size_t i = close + 2;
  while (i < text->size()) {
    auto sp = text->find(' ', i);
    f.push_back(text->substr(i, sp == std::string::npos ? std::string::npos : sp - i));
    if (sp == std::string::npos) break;
    i = sp + 1;
  }
  if (f.size() < 20) return fail("short /proc/" + std::to_string(pid) + "/stat");
  ProcStat st;
  st.state = f[0].empty() ? '?' : f[0][0];
  st.ppid = std::stoi(f[1]);
  st.pgid = std::stoi(f[2]);
  st.sid = std::stoi(f[3]);
  st.tty_nr = std::stoi(f[4]);
  st.start_time = std::stoull(f[19]);
  return st;
}

void for_each_process(const std::function<void(pid_t, const ProcStat&)>& fn) {
  std::unique_ptr<DIR, int (*)(DIR*)> proc(::opendir("/proc"), ::closedir);
  while (proc) {
    dirent* e = ::readdir(proc.get());
    if (e == nullptr) break;
    if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
    auto p = static_cast<pid_t>(std::atoi(e->d_name));
    if (auto st = read_proc_stat(p)) fn(p, *st);
  }
}

std::vector<pid_t> process_tree(pid_t root) {
  std::vector<pid_t> out{root};
  for (std::size_t i = 0; i < out.size(); ++i) {
    std::string task_dir = fmt::format("/proc/{}/task", out[i]);
    auto dir = open_file(task_dir, O_RDONLY | O_DIRECTORY);
    if (!dir) continue;
    auto tids = list_directory(dir->get());
    if (!tids) continue;
    for (const auto& tid : *tids) {
      auto children = read_file(task_dir + "/" + tid + "/children", 1 << 20);
      if (!children) continue;
      std::size_t p = 0;
      while (p < children->size()) {
        auto sp = children->find(' ', p);
        std::string n = children->substr(p, sp == std::string::npos ? std::string::npos : sp - p);
        if (!n.empty()) out.push_back(std::stoi(n));
        if (sp == std::string::npos) break;
        p = sp + 1;
      }
    }
  }
  return out;
}

std::vector<std::string> dump_warnings(pid_t root) {
  std::vector<std::string> warnings;
  std::set<std::string> seen;
  auto add = [&](std::string w) {
    if (seen.insert(w).second) warnings.push_back(std::move(w));
  };
  std::map<std::string, std::vector<std::string>> pipes;  // pipe:[ino] -> "pid P fd N"
  for (pid_t pid : process_tree(root)) {
    if (auto st = read_proc_stat(pid); st && st->tty_nr != 0) {
      add(
          fmt::format("pid {} has a controlling terminal: CRIU dumps it only as a shell job and "
                      "the restored process has no terminal (input from the terminal is lost)",
                      pid));
    }
    std::string fd_dir = fmt::format("/proc/{}/fd", pid);
    auto dir = open_file(fd_dir, O_RDONLY | O_DIRECTORY);
    if (!dir) continue;
    auto fds = list_directory(dir->get());
    if (!fds) continue;
    for (const auto& fd : *fds) {
      char target[512];
      ssize_t n = ::readlinkat(dir->get(), fd.c_str(), target, sizeof target - 1);
      if (n <= 0) continue;
      std::string t(target, static_cast<std::size_t>(n));
      if (t.starts_with("/dev/pts/") || t.starts_with("/dev/tty")) {
        add(
            fmt::format("pid {} fd {} is a terminal ({}): it cannot be restored without that "
                        "terminal",
                        pid, fd, t));
      } else if (t.starts_with("pipe:")) {
        pipes[t].push_back(fmt::format("pid {} fd {}", pid, fd));
      } else if (t.starts_with("socket:")) {
        add(
            fmt::format("pid {} fd {} is a socket ({}): established TCP connections need "
                        "--tcp-established, unix sockets to processes outside the tree "
                        "cannot be dumped",
                        pid, fd, t));
      }
    }
  }
  for (const auto& [pipe, users] : pipes) {
    if (users.size() == 1) {
      add(
          fmt::format("{} is a {} whose other end seems to be outside the tree: the restored "
                      "process gets a new pipe that nothing reads or writes",
                      users[0], pipe));
    }
  }
  return warnings;
}

std::vector<std::string> process_argv(pid_t pid) {
  std::vector<std::string> argv;
  auto text = read_file(fmt::format("/proc/{}/cmdline", pid), 1 << 20);
  if (!text) return argv;
  std::size_t p = 0;
  while (p < text->size()) {
    auto z = text->find('\0', p);
    argv.push_back(text->substr(p, z == std::string::npos ? std::string::npos : z - p));
    if (z == std::string::npos) break;
    p = z + 1;
  }
  return argv;
}

namespace {

std::string proc_link(pid_t pid, const char* what) {
  char buf[4096];
  ssize_t n = ::readlink(fmt::format("/proc/{}/{}", pid, what).c_str(), buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : "";
}

}  // namespace

Result<JobRecord> adopted_process_record(pid_t pid, long now) {
  auto st = read_proc_stat(pid);
  if (!st) return std::unexpected(Error(fmt::format("no process {}", pid), ENOENT));
  JobRecord rec;
  rec.id = new_job_id();
  rec.kind = "process";
  rec.argv = process_argv(pid);
  rec.name = default_job_name(rec.argv);
  rec.cwd = proc_link(pid, "cwd");
  rec.pid = pid;
  rec.start_time = st->start_time;
  rec.state = st->ppid == ::getpid() ? job_state::kRunning : job_state::kDetached;
  rec.created = rec.started = now;
  return rec;
}

}  // namespace arch
