// FileLocks: fdinfo lock lines per process, the manifest form, and the check after restore.
#include "criu/file_locks.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <set>
#include <sstream>
#include <tuple>

#include "base/file_util.h"

namespace arch {
namespace {

// The target of /proc/<pid>/fd/<fd>, or empty when it is gone.
std::string fd_target(const std::string& link) {
  char buf[4096];
  ssize_t n = ::readlink(link.c_str(), buf, sizeof buf - 1);
  if (n <= 0) return {};
  return std::string(buf, static_cast<std::size_t>(n));
}

}  // namespace

std::vector<LockLine> parse_fdinfo_locks(std::string_view fdinfo) {
  std::vector<LockLine> out;
  std::istringstream in{std::string(fdinfo)};
  for (std::string line; std::getline(in, line);) {
    if (!line.starts_with("lock:")) continue;
    // lock:\t1: FLOCK  ADVISORY  WRITE 13141 00:2e:12345 0 EOF
    std::istringstream words(line.substr(5));
    std::string id, kind, advisory, mode, pid, dev_ino, start, end;
    if (!(words >> id >> kind)) continue;
    if (kind == "->") continue;  // a waiter, not a holder ("1: -> FLOCK ...")
    if (!(words >> advisory >> mode >> pid >> dev_ino >> start >> end)) continue;
    out.push_back({kind, mode, dev_ino, start, end});
  }
  return out;
}

std::vector<HeldLock> locks_held_by(const std::vector<int>& pids) {
  std::vector<HeldLock> out;
  for (int pid : pids) {
    std::string proc = "/proc/" + std::to_string(pid);
    auto dir = open_file(proc + "/fdinfo", O_RDONLY | O_DIRECTORY);
    if (!dir) continue;  // exited
    auto fds = list_directory(dir->get());
    if (!fds) continue;
    // One entry per lock of this process: a POSIX lock shows on every fd of its file, a
    // flock on every dup of its open file.
    std::set<std::tuple<std::string, std::string, std::string, std::string, std::string>> seen;
    for (const auto& fd : *fds) {
      auto info = read_file(proc + "/fdinfo/" + fd, 1 << 20);
      if (!info || info->find("lock:") == std::string::npos) continue;
      std::string path = fd_target(proc + "/fd/" + fd);
      if (path.empty()) continue;
      for (auto& l : parse_fdinfo_locks(*info)) {
        if (!seen.insert({l.kind, l.mode, l.dev_ino, l.start, l.end}).second) continue;
        out.push_back({l.kind, l.mode, path, l.start, l.end});
      }
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

nlohmann::json locks_to_json(const std::vector<HeldLock>& locks) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& l : locks) {
    out.push_back(
        {{"kind", l.kind}, {"mode", l.mode}, {"path", l.path}, {"start", l.start}, {"end", l.end}});
  }
  return out;
}

Result<std::vector<HeldLock>> locks_from_json(const nlohmann::json& j) {
  std::vector<HeldLock> out;
  if (j.is_null()) return out;
  if (!j.is_array()) return fail("file_locks is not a list");
  for (const auto& e : j) {
    HeldLock l;
    for (auto [key, field] : {std::pair{"kind", &l.kind},
                              {"mode", &l.mode},
                              {"path", &l.path},
                              {"start", &l.start},
                              {"end", &l.end}}) {
      if (!e.is_object() || !e.contains(key) || !e[key].is_string())
        return fail(std::string("file_locks: an entry without a string ") + key);
      *field = e[key].get<std::string>();
    }
    out.push_back(std::move(l));
  }
  return out;
}

std::vector<HeldLock> missing_locks(const std::vector<HeldLock>& recorded,
                                    const std::vector<HeldLock>& now) {
  std::vector<HeldLock> a = recorded, b = now, out;
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  std::set_difference(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(out));
  return out;
}

std::string describe(const HeldLock& lock) {
  std::string s = lock.kind + " " + lock.mode + " " + lock.path;
  if (lock.kind != "FLOCK") s += " [" + lock.start + "-" + lock.end + "]";
  return s;
}

}  // namespace arch
