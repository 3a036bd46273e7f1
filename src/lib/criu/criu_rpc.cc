// CriuRpc: `criu swrk 3` on a SOCK_SEQPACKET socketpair, one request and one response.
#include "criu/criu_rpc.h"

#include <fcntl.h>
#include <fmt/core.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <limits>

#include "base/file_util.h"
#include "base/unique_fd.h"
#include "criu/criu_errors.h"
#include "criu_rpc.pb.h"

namespace arch {
namespace {

constexpr int kSwrkFd = 3;          // The criu child's end of the socketpair.
constexpr int kFirstInheritFd = 4;  // Inherited fds follow it.
constexpr std::size_t kMaxResponse = 1 << 20;

std::string_view type_name(criu::ReqType type) {
  switch (type) {
    case criu::DUMP:
      return "dump";
    case criu::RESTORE:
      return "restore";
    case criu::VERSION:
      return "version";
    default:
      return "request";
  }
}

// The child: fds placed (socket at 3, inherited at 4..), everything else closed, signals
// unblocked, then exec. Only async-signal-safe calls.
[[noreturn]] void exec_swrk(const char* const* argv, int sock, const std::vector<int>& inherit,
                            int devnull) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  if (::dup2(devnull, 0) < 0 || ::dup2(devnull, 1) < 0 || ::dup2(devnull, 2) < 0) ::_exit(127);
  if (::dup2(sock, kSwrkFd) < 0) ::_exit(127);
  for (std::size_t i = 0; i < inherit.size(); ++i) {
    if (::dup2(inherit[i], kFirstInheritFd + static_cast<int>(i)) < 0) ::_exit(127);
  }
  ::close_range(static_cast<unsigned>(kFirstInheritFd + static_cast<int>(inherit.size())), ~0U, 0);
  ::execv(argv[0], const_cast<char* const*>(argv));
  ::_exit(127);
}

// Moves `fd` out of the range the child writes to (0..3+n), as a CLOEXEC duplicate.
Result<UniqueFd> dup_high(int fd) {
  int d = ::fcntl(fd, F_DUPFD_CLOEXEC, 64);
  if (d < 0) return fail_errno("dup fd for criu");
  return UniqueFd(d);
}

Result<void> send_request(int sock, const criu::Req& req) {
  std::string packet;
  if (!req.SerializeToString(&packet)) return fail("criu rpc: cannot serialize the request");
  ssize_t n = retry_eintr([&] { return ::send(sock, packet.data(), packet.size(), MSG_NOSIGNAL); });
  if (n < 0) return fail_errno("criu rpc: send request");
  if (static_cast<std::size_t>(n) != packet.size()) return fail("criu rpc: short send");
  return {};
}

Result<criu::Resp> receive_response(int sock) {
  char probe;
  ssize_t size = retry_eintr([&] { return ::recv(sock, &probe, 1, MSG_PEEK | MSG_TRUNC); });
  if (size < 0) return fail_errno("criu rpc: receive response");
  if (size == 0) return fail("criu exited without answering (see its log)");
  if (static_cast<std::size_t>(size) > kMaxResponse) return fail("criu rpc: response too large");
  std::string packet(static_cast<std::size_t>(size), '\0');
  ssize_t got = retry_eintr([&] { return ::recv(sock, packet.data(), packet.size(), 0); });
  if (got != size) return fail_errno("criu rpc: receive response");
  criu::Resp resp;
  if (!resp.ParseFromString(packet)) return fail("criu rpc: malformed response");
  return resp;
}

// One swrk session: start criu, send `req`, read the answer, reap criu.
Result<criu::Resp> call(const std::string& criu_path, const criu::Req& req,
                        const std::vector<int>& inherit_fds) {
  if (criu_path.empty() || criu_path.front() != '/')
    return fail("criu path must be absolute: '" + criu_path + "'");
  if (::access(criu_path.c_str(), X_OK) != 0) return fail_errno("criu " + criu_path);
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
    return fail_errno("socketpair for criu");
  UniqueFd ours(sv[0]);
  auto theirs = dup_high(sv[1]);
  ::close(sv[1]);
  if (!theirs) return std::unexpected(theirs.error());
  std::vector<UniqueFd> high;
  std::vector<int> inherit;
  for (int fd : inherit_fds) {
    auto d = dup_high(fd);
    if (!d) return std::unexpected(d.error());
    inherit.push_back(d->get());
    high.push_back(std::move(*d));
  }
  auto devnull = open_file("/dev/null", O_RDWR);
  if (!devnull) return std::unexpected(devnull.error());
  std::string fd_arg = std::to_string(kSwrkFd);
  const char* argv[] = {criu_path.c_str(), "swrk", fd_arg.c_str(), nullptr};
  pid_t pid = ::fork();
  if (pid < 0) return fail_errno("fork criu");
  if (pid == 0) exec_swrk(argv, theirs->get(), inherit, devnull->get());
  theirs->reset();
  high.clear();

  auto sent = send_request(ours.get(), req);
  Result<criu::Resp> resp = sent ? receive_response(ours.get()) : std::unexpected(sent.error());
  ours.reset();  // criu ends its session when we close our end.
  int status = 0;
  retry_eintr([&] { return ::waitpid(pid, &status, 0); });
  if (!resp && WIFEXITED(status) && WEXITSTATUS(status) == 127) {
    return fail("could not execute " + criu_path);
  }
  return resp;
}

criu::Opts* common_opts(criu::Req& req, const CriuCommonOptions& o) {
  criu::Opts* opts = req.mutable_opts();
  opts->set_images_dir_fd(o.images_dir_fd);
  if (o.work_dir_fd >= 0) opts->set_work_dir_fd(o.work_dir_fd);
  if (!o.log_file.empty()) opts->set_log_file(o.log_file);
  opts->set_log_level(o.log_level);
  if (o.shell_job) opts->set_shell_job(true);
  if (o.tcp_established) opts->set_tcp_established(true);
  if (o.ext_unix_sk) opts->set_ext_unix_sk(true);
  if (o.file_locks) opts->set_file_locks(true);
  for (const auto& e : o.external) opts->add_external(e);
  return opts;
}

// The error for an unsuccessful response: CRIU's own message and errno, then its log.
Error failure(const criu::Resp& resp, const CriuCommonOptions& o) {
  std::string msg = fmt::format("criu {} failed", type_name(resp.type()));
  // CRIU's message is its first error, which here is often its harmless complaint about
  // RLIMIT_NOFILE: the log's last errors below say more then.
  std::string first = resp.has_cr_errmsg() ? resp.cr_errmsg() : "";
  while (!first.empty() && (first.back() == '\n' || first.back() == ' ')) first.pop_back();
  if (!first.empty() && first.find("RLIMIT_NOFILE") == std::string::npos) msg += ": " + first;
  if (resp.has_cr_errno() && resp.cr_errno() != 0)
    msg += fmt::format(" ({})", std::strerror(resp.cr_errno()));
  int dir = o.work_dir_fd >= 0 ? o.work_dir_fd : o.images_dir_fd;
  std::string log = o.log_file.empty() ? "" : criu_log_errors(dir, o.log_file);
  if (!log.empty()) msg += "\nCRIU's log (" + o.log_file + "):\n" + log;
  // The known failures in one sentence with what to do (criu_errors.h), CRIU's words after.
  if (auto why = explain_criu_log(msg, /*error_lines_only=*/false)) {
    msg = fmt::format("criu {} failed: {}\n", type_name(resp.type()), why->sentence) + msg;
  }
  return Error(msg);
}

Result<criu::Resp> checked(Result<criu::Resp> resp, const CriuCommonOptions& o) {
  if (!resp) return resp;
  if (!resp->success()) return std::unexpected(failure(*resp, o));
  return resp;
}

}  // namespace

std::string CriuVersion::text() const {
  return sublevel != 0 ? fmt::format("{}.{}.{}", major, minor, sublevel)
                       : fmt::format("{}.{}", major, minor);
}

std::string criu_log_errors(int dirfd, const std::string& log_file, std::size_t max_lines) {
  UniqueFd fd(::openat(dirfd, log_file.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) return "";
  auto text = read_all(fd.get(), 64 << 20);
  if (!text) return "";
  std::vector<std::string_view> lines;
  std::string_view rest = *text;
  while (!rest.empty()) {
    auto nl = rest.find('\n');
    std::string_view line = rest.substr(0, nl);
    rest = nl == std::string_view::npos ? std::string_view() : rest.substr(nl + 1);
    if (line.find("Error (") == std::string_view::npos) continue;
    if (line.find("RLIMIT_NOFILE") != std::string_view::npos) continue;
    lines.push_back(line);
  }
  std::size_t from = lines.size() > max_lines ? lines.size() - max_lines : 0;
  std::string out;
  for (std::size_t i = from; i < lines.size(); ++i) out += "  " + std::string(lines[i]) + "\n";
  if (!out.empty()) out.pop_back();
  return out;
}

Result<CriuVersion> CriuRpc::version() const {
  criu::Req req;
  req.set_type(criu::VERSION);
  auto resp = call(criu_, req, {});
  if (!resp) return std::unexpected(resp.error().wrap("criu version"));
  if (!resp->success() || !resp->has_version()) return fail("criu version: request refused");
  const auto& v = resp->version();
  return CriuVersion{v.major_number(), v.minor_number(), v.sublevel(), v.gitid()};
}

Result<void> CriuRpc::dump(const CriuDumpOptions& o) const {
  if (o.pid <= 0) return fail("criu dump: no pid");
  criu::Req req;
  req.set_type(criu::DUMP);
  criu::Opts* opts = common_opts(req, o);
  opts->set_pid(o.pid);
  opts->set_leave_running(o.leave_running);
  if (o.ghost_limit > 0) {
    opts->set_ghost_limit(static_cast<std::uint32_t>(
        std::min<std::uint64_t>(o.ghost_limit, std::numeric_limits<std::uint32_t>::max())));
  }
  auto resp = checked(call(criu_, req, {}), o);
  if (!resp) return std::unexpected(resp.error());
  return {};
}

Result<pid_t> CriuRpc::restore(const CriuRestoreOptions& o) const {
  criu::Req req;
  req.set_type(criu::RESTORE);
  criu::Opts* opts = common_opts(req, o);
  opts->set_rst_sibling(o.rst_sibling);
  std::vector<int> fds;
  for (std::size_t i = 0; i < o.inherit_fds.size(); ++i) {
    auto* inherit = opts->add_inherit_fd();
    inherit->set_key(o.inherit_fds[i].first);
    inherit->set_fd(kFirstInheritFd + static_cast<int>(i));
    fds.push_back(o.inherit_fds[i].second);
  }
  auto resp = checked(call(criu_, req, fds), o);
  if (!resp) return std::unexpected(resp.error());
  if (!resp->has_restore()) return fail("criu restore: the response has no pid");
  return static_cast<pid_t>(resp->restore().pid());
}

}  // namespace arch
