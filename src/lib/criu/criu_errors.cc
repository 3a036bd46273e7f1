// CriuErrors: one table of CRIU log lines and the sentence each one stands for. The lines
// are CRIU 4.2.1's own (see criu_errors_test.cc for the logs they were taken from); a rule
// matches only CRIU's error lines, so the debug lines around them (which mention sockets,
// locks and ttys all the time) never do.
#include "criu/criu_errors.h"

#include <algorithm>

namespace arch {
namespace {

const std::vector<CriuErrorRule>& rules() {
  static const std::vector<CriuErrorRule> table = {
      {"criu-too-old-for-sockets",
       {"Can't get ", "opt: Operation not supported"},
       {},
       "This CRIU cannot dump sockets on this kernel (Linux 6.16 and later refuse a socket "
       "option CRIU before 4.2 reads): install CRIU 4.2 or later (scripts/install-criu.sh) and "
       "name it in the node config's [runtime] criu."},
      {"tcp-established",
       {"Connected TCP socket"},
       {},
       "A process has an established TCP connection and this checkpoint was not allowed to "
       "take it (CRIU's tcp-established mode): allow it with the container's TCP policy "
       "(ARCH_TCP), or close the connection before the checkpoint."},
      {"file-locks",
       {},
       {"Some file locks are hold", "file locks are held"},
       "A process holds a file lock and CRIU ran without its file-locks mode: checkpoint the "
       "container through ARCH, which dumps file locks, not with a plain runc or CRIU call."},
      {"file-lock",
       {"criu/file-lock.c"},
       {},
       "CRIU could not checkpoint a file lock of the container (for example one shared with "
       "a process outside it, or a lease): release such locks before the checkpoint."},
      {"ghost-limit",
       {"Can't dump ghost file", "increase limit"},
       {},
       "A process keeps a deleted file open that is larger than the node's ghost-file limit: "
       "raise [checkpoint] ghost_limit in the node config (the file is then stored in the "
       "checkpoint), or have the program close the deleted file."},
      {"io-uring",
       {"io_uring"},
       {},
       "A process uses io_uring, which CRIU cannot checkpoint: run the program without "
       "io_uring (for example fio --ioengine=psync or libaio)."},
      {"fd-not-passable",
       {},
       {"send_fds failed", "Can't retrieve FDs from socket"},
       "CRIU could not take over a file descriptor of a process because the kernel refuses to "
       "pass it between processes; an io_uring instance is the usual cause and cannot be "
       "checkpointed: run the program without io_uring."},
      {"unsupported-fd",
       {},
       {"Unknown shit", "Unknown file type"},
       "A process holds a kind of file descriptor CRIU cannot checkpoint (the CRIU line names "
       "it): close it before the checkpoint, or run the program without it."},
      {"unsupported-socket",
       {},
       {"Unknown socket collected", "Unsupported socket", "Unknown socket family"},
       "A process holds a socket of a family CRIU cannot checkpoint (for example vsock, "
       "AF_ALG or SCTP): the container cannot be checkpointed while it holds one."},
      {"external-unix-socket",
       {"External socket is used"},
       {},
       "A process is connected to a unix socket outside the container (for example a host "
       "daemon's socket mounted into it), which CRIU cannot checkpoint: have the program "
       "connect only while it needs the socket, or do not mount host sockets into "
       "containers that are checkpointed."},
      {"rlimit-permission",
       {"Can't get rlimit"},
       {},
       "CRIU lacks CAP_SYS_RESOURCE and so cannot dump a process that runs as another user: "
       "run ARCH and CRIU as root with all capabilities (real nodes have them), or run the "
       "container's processes as root."},
      {"tty",
       {"criu/tty.c"},
       {},
       "A process holds a terminal whose other end is outside the container (an `exec -t` "
       "session, or a terminal it opened itself), which CRIU cannot checkpoint: end such "
       "sessions before the checkpoint (the container's own terminal, `run -t`, works)."},
      {"unseizable-task",
       {},
       {"Unseizable non-zombie", "Timeout reached. Try to interrupt", "Can't freeze"},
       "CRIU could not stop every process of the container (one stayed in uninterruptible "
       "sleep, state D, for example waiting on a stuck disk or filesystem): try again, and if "
       "it repeats, find what that process waits on."},
      {"task-exited",
       {"No such process"},
       {"Unable to detach", "Unable to interrupt", "Can't seize", "Unable to seize"},
       "A process of the container exited while CRIU was dumping it: try again."},
      {"dirty-tracking",
       {},
       {"Tracking memory is not available", "BUG at criu/mem.c", "Dirty tracking is OFF"},
       "The kernel has no soft-dirty memory tracking, which incremental pre-copy needs: set "
       "[checkpoint] pre_copy = off, or use a kernel built with CONFIG_MEM_SOFT_DIRTY."},
      {"criu-vdso",
       {},
       {"Unexpected rt vDSO area bounds", "kerndat_vdso_fill_symtable failed"},
       "This CRIU does not work on this kernel (it cannot read the kernel's vDSO): install a "
       "newer CRIU (scripts/install-criu.sh) and name it in the node config's [runtime] criu."},
      {"network-lock",
       {},
       {"Locking network failed", "iptables-restore"},
       "CRIU could not lock the container's network (iptables-restore missing or failing): "
       "install iptables, or set [checkpoint] network_lock = skip in the node config."},
      {"kernel-feature",
       {},
       {"criu/kerndat.c", "not supported by the kernel", "Kernel doesn't support",
        "kernel doesn't support"},
       "CRIU needs a kernel feature this kernel lacks (the CRIU line names it): run `criu "
       "check --all` on the node, and use a kernel that has it."},
      {"no-space",
       {},
       {"No space left on device", "no space left on device"},
       "The checkpoint store ran out of space during the dump: free space in the store, or "
       "move it to a larger filesystem."},
  };
  return table;
}

bool contains(std::string_view line, std::string_view what) {
  return line.find(what) != std::string_view::npos;
}

bool matches(const CriuErrorRule& rule, std::string_view line) {
  if (!std::all_of(rule.all.begin(), rule.all.end(),
                   [&](std::string_view w) { return contains(line, w); })) {
    return false;
  }
  return rule.any.empty() || std::any_of(rule.any.begin(), rule.any.end(),
                                         [&](std::string_view w) { return contains(line, w); });
}

template <class F>
void for_each_line(std::string_view text, F&& f) {
  while (!text.empty()) {
    auto nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    f(line);
    if (nl == std::string_view::npos) break;
    text.remove_prefix(nl + 1);
  }
}

}  // namespace

std::span<const CriuErrorRule> criu_error_rules() {
  return rules();
}

bool is_criu_error_line(std::string_view line) {
  if (contains(line, "Can't setup RLIMIT_NOFILE for self")) return false;
  return contains(line, "Error (") || contains(line, "BUG") || contains(line, "Error:");
}

std::optional<CriuFailure> explain_criu_log(std::string_view log, bool error_lines_only) {
  std::vector<std::string_view> errors;
  for_each_line(log, [&](std::string_view line) {
    if (!error_lines_only || is_criu_error_line(line)) errors.push_back(line);
  });
  for (const auto& rule : rules()) {
    for (auto line : errors) {
      if (matches(rule, line)) return CriuFailure{rule.id, rule.sentence, std::string(line)};
    }
  }
  return std::nullopt;
}

std::vector<std::string> criu_error_lines(std::string_view log, std::size_t max_lines) {
  std::vector<std::string> out;
  for_each_line(log, [&](std::string_view line) {
    if (is_criu_error_line(line)) out.emplace_back(line);
  });
  if (out.size() > max_lines) out.erase(out.begin(), out.end() - static_cast<long>(max_lines));
  return out;
}

std::string criu_log_tail(std::string_view log, std::size_t max) {
  if (log.size() <= max) return std::string(log);
  std::size_t from = log.size() - max;
  auto nl = log.find('\n', from);
  from = nl == std::string_view::npos ? from : nl + 1;
  return "[... first " + std::to_string(from) + " bytes of the log not kept ...]\n" +
         std::string(log.substr(from));
}

}  // namespace arch
