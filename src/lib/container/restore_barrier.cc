// RestoreBarrier: a group's members released together at CRIU's post-restore point.
#include "container/restore_barrier.h"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/core.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <optional>
#include <thread>
#include <vector>

#include "base/clock.h"
#include "base/file_util.h"
#include "base/process.h"
#include "base/unique_fd.h"

namespace arch {
namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kPoll = std::chrono::milliseconds(5);
constexpr std::string_view kArrivalsPrefix = "arrivals.";
// The comment every hold rule carries: "arch-group <generation prefix> until <epoch s>".
constexpr std::string_view kHoldTag = "arch-group";

// The group's key directory in the store (where its record's generations are).
Result<UniqueFd> open_group_dir(const GroupRecord& record) {
  auto slash = record.path.rfind('/');
  if (slash == std::string::npos || slash == 0) return fail("group record without a path");
  return open_file(record.path.substr(0, slash), O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
}

// <group dir>/arrivals.<generation>, made when missing.
Result<UniqueFd> open_arrivals(const GroupRecord& record) {
  auto dir = open_group_dir(record);
  if (!dir) return std::unexpected(dir.error());
  std::string name = std::string(kArrivalsPrefix) + record.generation;
  if (::mkdirat(dir->get(), name.c_str(), 0700) != 0 && errno != EEXIST) {
    return fail_errno("mkdir " + name);
  }
  int fd = ::openat(dir->get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return fail_errno("open " + name);
  return UniqueFd(fd);
}

Result<void> mark(const GroupRecord& record, const std::string& key, std::string_view what) {
  auto dir = open_arrivals(record);
  if (!dir) return std::unexpected(dir.error());
  int fd = ::openat(dir->get(), key.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC,
                    0600);
  if (fd < 0) return fail_errno("marker " + key);
  UniqueFd owned(fd);
  return write_all(owned.get(), what);
}

// "arrived", "failed" or "" (not there yet).
std::string marker_of(int dirfd, const std::string& key) {
  int fd = ::openat(dirfd, key.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return {};
  UniqueFd owned(fd);
  char buf[16] = {};
  ssize_t n = ::read(owned.get(), buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
}

// Removes the arrivals directories of the group older than `stale` (at most 100 looked at).
void sweep(const GroupRecord& record, std::chrono::seconds stale) {
  auto dir = open_group_dir(record);
  if (!dir) return;
  int dup = ::fcntl(dir->get(), F_DUPFD_CLOEXEC, 0);
  if (dup < 0) return;
  DIR* d = ::fdopendir(dup);
  if (d == nullptr) {
    ::close(dup);
    return;
  }
  std::vector<std::string> old;
  int looked = 0;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (!name.starts_with(kArrivalsPrefix) || ++looked > 100) continue;
    struct stat st {};
    if (::fstatat(dir->get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    if (!S_ISDIR(st.st_mode) || ::time(nullptr) - st.st_mtime < stale.count()) continue;
    old.push_back(name);
  }
  ::closedir(d);
  for (const auto& name : old) {
    int sub = ::openat(dir->get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (sub < 0) continue;
    UniqueFd owned(sub);
    for (const auto& m : record.members) (void)::unlinkat(owned.get(), m.key.c_str(), 0);
    (void)::unlinkat(dir->get(), name.c_str(), AT_REMOVEDIR);  // fails if others remain: kept
  }
}

ProcessOptions ten_seconds() {
  ProcessOptions o;
  o.timeout = std::chrono::seconds(10);
  return o;
}

std::string iptables_path() {
  for (const char* p : {"/usr/sbin/iptables", "/sbin/iptables", "/usr/bin/iptables"}) {
    if (::access(p, X_OK) == 0) return p;
  }
  return {};
}

// "a.b.c.d:port" → (address, port); nullopt for anything else (IPv6 included).
std::optional<std::pair<std::string, std::string>> split_endpoint(const std::string& e) {
  auto colon = e.rfind(':');
  if (colon == std::string::npos || e.find(':') != colon) return std::nullopt;
  std::string ip = e.substr(0, colon), port = e.substr(colon + 1);
  if (ip.empty() || port.empty() || ip.find_first_not_of("0123456789.") != std::string::npos ||
      port.find_first_not_of("0123456789") != std::string::npos) {
    return std::nullopt;
  }
  return std::pair{ip, port};
}

}  // namespace

RestoreBarrier::RestoreBarrier(GroupRecord record, std::string key,
                               std::chrono::milliseconds timeout)
    : record_(std::move(record)), key_(std::move(key)), timeout_(timeout) {
  sweep(record_,
        std::chrono::duration_cast<std::chrono::seconds>(timeout) + std::chrono::seconds(60));
}

RestoreBarrier::~RestoreBarrier() {
  unhold();
}

void RestoreBarrier::hold(const std::vector<std::pair<std::string, std::string>>& connections) {
  std::string iptables = iptables_path();
  if (iptables.empty()) {
    hold_note_ = "connections not held (no iptables)";
    return;
  }
  (void)sweep_expired_holds(static_cast<long>(::time(nullptr)));
  auto expiry = ::time(nullptr) +
                std::chrono::duration_cast<std::chrono::seconds>(timeout_ + kHoldSlack).count();
  std::string tag = fmt::format("{} {} until {}", kHoldTag, record_.generation.substr(0, 16),
                                static_cast<long>(expiry));
  std::size_t held = 0;
  for (const auto& [local, remote] : connections) {
    auto l = split_endpoint(local);
    auto r = split_endpoint(remote);
    if (!l || !r) continue;  // IPv6 or malformed: not held
    const auto& [lip, lport] = *l;
    const auto& [rip, rport] = *r;
    std::vector<std::vector<std::string>> specs = {
        {"INPUT", "-p", "tcp", "-s", rip, "--sport", rport, "-d", lip, "--dport", lport},
        {"OUTPUT", "-p", "tcp", "-s", lip, "--sport", lport, "-d", rip, "--dport", rport},
        {"FORWARD", "-p", "tcp", "-s", rip, "--sport", rport, "-d", lip, "--dport", lport},
        {"FORWARD", "-p", "tcp", "-s", lip, "--sport", lport, "-d", rip, "--dport", rport}};
    for (auto& spec : specs) {
      for (const char* a : {"-m", "comment", "--comment"}) spec.emplace_back(a);
      spec.push_back(tag);
      spec.emplace_back("-j");
      spec.emplace_back("DROP");
      std::vector<std::string> argv = {iptables, "-w", "5", "-I"};
      argv.insert(argv.end(), spec.begin(), spec.end());
      auto ran = run_process(argv, ten_seconds());
      if (!ran || !ran->ok()) {
        hold_note_ = "connections not all held (iptables: " +
                     (ran ? ran->err.substr(0, ran->err.find('\n')) : ran.error().message()) + ")";
        continue;
      }
      rules_.push_back(std::move(spec));
    }
    ++held;
  }
  if (hold_note_.empty() && held > 0) {
    hold_note_ = fmt::format("{} connection(s) held until the release", held);
  }
}

std::vector<std::string> RestoreBarrier::expired_hold_rule(const std::string& line, long now) {
  // `iptables -S` prints "-A CHAIN <match...> -m comment --comment "<tag>" -j DROP"; the
  // only quoted word is the comment (ours has no quote or backslash).
  std::vector<std::string> words;
  for (std::size_t at = 0; at < line.size();) {
    if (line[at] == ' ') {
      ++at;
      continue;
    }
    if (line[at] == '"') {
      auto end = line.find('"', at + 1);
      if (end == std::string::npos) return {};
      words.push_back(line.substr(at + 1, end - at - 1));
      at = end + 1;
      continue;
    }
    auto end = line.find(' ', at);
    if (end == std::string::npos) end = line.size();
    words.push_back(line.substr(at, end - at));
    at = end;
  }
  if (words.size() < 4 || words[0] != "-A" || words.back() != "DROP") return {};
  auto comment = std::find(words.begin(), words.end(), "--comment");
  if (comment == words.end() || comment + 1 == words.end()) return {};
  const std::string& tag = *(comment + 1);
  // "arch-group <16 hex> until <digits>"
  std::string prefix = std::string(kHoldTag) + " ";
  auto until = tag.find(" until ");
  if (tag.rfind(prefix, 0) != 0 || until != prefix.size() + 16) return {};
  std::string gen = tag.substr(prefix.size(), 16), when = tag.substr(until + 7);
  if (gen.find_first_not_of("0123456789abcdef") != std::string::npos || when.empty() ||
      when.size() > 18 || when.find_first_not_of("0123456789") != std::string::npos) {
    return {};
  }
  if (std::stol(when) >= now) return {};
  words[0] = "-D";
  return words;
}

std::size_t RestoreBarrier::sweep_expired_holds(long now) {
  std::string iptables = iptables_path();
  if (iptables.empty()) return 0;
  auto listed = run_process({iptables, "-w", "5", "-S"}, ten_seconds());
  if (!listed || !listed->ok()) return 0;
  std::size_t removed = 0;
  for (std::size_t at = 0; at < listed->out.size();) {
    auto nl = listed->out.find('\n', at);
    if (nl == std::string::npos) nl = listed->out.size();
    auto rule = expired_hold_rule(listed->out.substr(at, nl - at), now);
    at = nl + 1;
    if (rule.empty()) continue;
    std::vector<std::string> argv = {iptables, "-w", "5"};
    argv.insert(argv.end(), rule.begin(), rule.end());
    if (auto ran = run_process(argv, ten_seconds()); ran && ran->ok()) ++removed;
  }
  return removed;
}

void RestoreBarrier::unhold() {
  std::string iptables = iptables_path();
  for (const auto& spec : rules_) {
    std::vector<std::string> argv = {iptables, "-w", "5", "-D"};
    argv.insert(argv.end(), spec.begin(), spec.end());
    (void)run_process(argv, ten_seconds());
  }
  rules_.clear();
}

RestoreBarrier::Released RestoreBarrier::release(const std::vector<int>& pids,
                                                 bool stop_on_failure) {
  Released out;
  out.note = arrive_and_wait(record_, key_, timeout_);
  if (auto at = out.note.find("member ");
      at != std::string::npos && out.note.find(" failed to restore") != std::string::npos) {
    auto from = at + 7;
    out.failed_member = out.note.substr(from, out.note.find(' ', from) - from);
  }
  unhold();
  if (!out.failed_member.empty() && stop_on_failure) return out;
  for (int pid : pids) {
    if (pid > 0) (void)::kill(pid, SIGCONT);
  }
  if (!hold_note_.empty()) out.note += "; " + hold_note_;
  return out;
}

void RestoreBarrier::failed() {
  unhold();
  mark_failed(record_, key_);
}

std::string RestoreBarrier::arrive_and_wait(const GroupRecord& record, const std::string& key,
                                            std::chrono::milliseconds timeout) {
  auto t0 = Clock::now();
  if (auto ok = mark(record, key, "arrived"); !ok) {
    return "group release: not synchronised (" + ok.error().message() + ")";
  }
  auto dir = open_arrivals(record);
  if (!dir) return "group release: not synchronised (" + dir.error().message() + ")";
  for (;;) {
    std::vector<std::string> missing;
    std::string failed;
    for (const auto& m : record.members) {
      auto what = marker_of(dir->get(), m.key);
      if (what == "failed") failed = m.key;
      if (what.empty() || what == "creating") missing.push_back(m.key);
    }
    if (!failed.empty()) {
      return fmt::format("group release: member {} failed to restore; released after {:.0f} ms",
                         failed, ms_since(t0));
    }
    if (missing.empty()) {
      return fmt::format(
          "group release: all {} members restored, released together after "
          "{:.0f} ms",
          record.members.size(), ms_since(t0));
    }
    if (Clock::now() - t0 >= timeout) {
      std::string names;
      for (const auto& k : missing) names += (names.empty() ? "" : ", ") + k;
      return fmt::format("group release: waited {:.0f} ms in vain for {}; released alone",
                         ms_since(t0), names);
    }
    std::this_thread::sleep_for(kPoll);
  }
}

Result<void> RestoreBarrier::wait_for_creation(const GroupRecord& record, const std::string& key,
                                               std::chrono::milliseconds timeout) {
  auto t0 = Clock::now();
  if (auto ok = mark(record, key, "creating"); !ok) return std::unexpected(ok.error());
  auto dir = open_arrivals(record);
  if (!dir) return std::unexpected(dir.error());
  for (;;) {
    std::vector<std::string> missing;
    for (const auto& m : record.members) {
      auto what = marker_of(dir->get(), m.key);
      if (what == "failed") {
        return fail(fmt::format("member {} of group {} generation {} failed to restore", m.key,
                                record.name, record.generation));
      }
      if (what.empty()) missing.push_back(m.key);
    }
    if (missing.empty()) return {};
    if (Clock::now() - t0 >= timeout) {
      (void)::unlinkat(dir->get(), key.c_str(), 0);
      std::string names;
      for (const auto& k : missing) names += (names.empty() ? "" : ", ") + k;
      return fail(ErrorKind::kTimeout,
                  fmt::format("group {}: waited {:.0f} s for its members {} (on any node) to be "
                              "re-created",
                              record.name, ms_since(t0) / 1000, names));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void RestoreBarrier::mark_failed(const GroupRecord& record, const std::string& key) {
  (void)mark(record, key, "failed");
}

}  // namespace arch
