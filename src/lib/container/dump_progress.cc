// DumpProgress and ending a dump's CRIU (see dump_progress.h).
#include "container/dump_progress.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <sstream>
#include <string_view>

#include "base/file_util.h"
#include "base/process.h"
#include "base/unique_fd.h"
#include "container/deadline_plan.h"

namespace arch {
namespace {

// Field `n` (0-based) of a whitespace-separated line.
uint64_t field(const std::string& text, int n) {
  std::istringstream in(text);
  std::string v;
  for (int i = 0; i <= n; ++i) {
    if (!(in >> v)) return 0;
  }
  uint64_t out = 0;
  std::from_chars(v.data(), v.data() + v.size(), out);
  return out;
}

std::vector<std::string> cmdline(pid_t pid) {
  std::vector<std::string> argv;
  auto text = read_file("/proc/" + std::to_string(pid) + "/cmdline", 64 << 10);
  if (!text) return argv;
  std::string_view rest = *text;
  while (!rest.empty()) {
    auto end = rest.find('\0');
    argv.emplace_back(rest.substr(0, end));
    if (end == std::string_view::npos) break;
    rest.remove_prefix(end + 1);
  }
  return argv;
}

pid_t parent_of(pid_t pid) {
  auto stat = read_file("/proc/" + std::to_string(pid) + "/stat", 4096);
  if (!stat) return -1;
  auto close = stat->rfind(')');  // the name may hold spaces and parentheses
  if (close == std::string::npos) return -1;
  return static_cast<pid_t>(field(stat->substr(close + 1), 1));
}

std::string comm_of(pid_t pid) {
  auto text = read_file("/proc/" + std::to_string(pid) + "/comm", 256);
  if (!text) return {};
  std::string s = *text;
  while (!s.empty() && s.back() == '\n') s.pop_back();
  return s;
}

std::vector<pid_t> all_pids() {
  std::vector<pid_t> out;
  DIR* d = ::opendir("/proc");
  if (d == nullptr) return out;
  while (dirent* e = ::readdir(d)) {
    pid_t pid = 0;
    std::string_view name = e->d_name;
    auto [end, ec] = std::from_chars(name.data(), name.data() + name.size(), pid);
    if (ec == std::errc() && end == name.data() + name.size() && pid > 0) out.push_back(pid);
  }
  ::closedir(d);
  return out;
}

// CRIU as runc starts it (`criu swrk N`), whatever loader runs it.
bool is_criu(pid_t pid) {
  if (comm_of(pid) == "criu") return true;
  auto argv = cmdline(pid);
  return std::find(argv.begin(), argv.end(), "swrk") != argv.end();
}

bool is_checkpoint_into(const std::vector<std::string>& argv, const std::string& images) {
  bool checkpoint = std::find(argv.begin(), argv.end(), "checkpoint") != argv.end();
  for (std::size_t i = 0; checkpoint && i + 1 < argv.size(); ++i) {
    if (argv[i] == "--image-path" && argv[i + 1] == images) return true;
  }
  return false;
}

// A `runc ... checkpoint --image-path <images>` that this process started (its child): a
// process in a container can give itself the same command line (it may even guess the
// staging's name), but it is never our child, so its children are never taken for CRIU.
bool is_our_checkpoint_into(pid_t pid, const std::string& images) {
  return pid > 0 && parent_of(pid) == ::getpid() && is_checkpoint_into(cmdline(pid), images);
}

}  // namespace

DumpProgress::DumpProgress(std::string dir) : dir_(std::move(dir)) {
  struct stat st {};
  if (::stat(dir_.c_str(), &st) == 0 && major(st.st_dev) != 0) {
    std::string path = "/sys/dev/block/" + std::to_string(major(st.st_dev)) + ":" +
                       std::to_string(minor(st.st_dev)) + "/stat";
    if (read_file(path, 4096)) device_stat_ = path;
  }
  base_ = read_now();
}

uint64_t DumpProgress::read_now() const {
  if (!device_stat_.empty()) {
    auto text = read_file(device_stat_, 4096);
    return text ? field(*text, 6) * 512 : 0;  // sectors written
  }
  UniqueFd dir(::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  std::size_t budget = 200000;  // entries: a staging directory holds a few hundred
  return dir ? allocated_tree_bytes(dir.get(), budget) : 0;
}

uint64_t DumpProgress::bytes(uint64_t written_back) {
  uint64_t now = read_now();
  uint64_t since = now > base_ ? now - base_ : 0;
  if (device_stat_.empty()) since = std::min(since, written_back);
  last_ = std::max(last_, since);
  return last_;
}

std::vector<pid_t> dump_criu_pids(const std::string& images) {
  std::vector<pid_t> out;
  if (images.empty()) return out;
  auto pids = all_pids();
  std::vector<pid_t> runcs;
  for (pid_t pid : pids) {
    if (is_our_checkpoint_into(pid, images)) runcs.push_back(pid);
  }
  for (pid_t pid : pids) {
    if (std::find(runcs.begin(), runcs.end(), parent_of(pid)) == runcs.end()) continue;
    if (is_criu(pid)) out.push_back(pid);
  }
  return out;
}

Result<int> end_dump_criu(const std::string& images) {
  int ended = 0;
  for (pid_t pid : dump_criu_pids(images)) {
    auto fd = open_pidfd(pid);
    if (!fd) continue;  // already gone
    // Still the same process (the pid was not reused between the scan and the pidfd)?
    pid_t parent = parent_of(pid);
    if (!is_our_checkpoint_into(parent, images) || !is_criu(pid)) {
      continue;
    }
    if (auto sent = signal_pidfd(fd->get(), SIGKILL); !sent) {
      return std::unexpected(sent.error().wrap("end CRIU (pid " + std::to_string(pid) + ")"));
    }
    ++ended;
  }
  return ended;
}

}  // namespace arch
