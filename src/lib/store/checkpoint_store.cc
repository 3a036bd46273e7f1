// CheckpointStore: layout, locking, the commit protocol and the reader's trust rule.
//
// Layout: `<base>/<owner>/<key>/` (every directory 0700, owned by us, every file 0600):
//   .lock                 flock'ed by whoever checkpoints, restores or deletes this key
//   staging-<16 hex>/     a checkpoint being written (stale if no one holds .lock)
//   ckpt-<stamp>/         committed generations, manifest.json inside
//   failed-<stamp>/       moved aside (corrupt, or failed to restore), reason.txt inside;
//                         a failed dump's holds only dump-logs/ (bounded tails of CRIU's logs)
// where <stamp> is the UTC time `yyyymmddThhmmss.nnnnnnnnnZ`, so names sort by age. A new
// generation's stamp is past every existing one, even within one clock tick.
//
// Commit protocol (under the key lock): hash every file of the staging directory into the
// manifest; make files 0600 and directories 0700 and fsync each; write manifest.json
// last (temp file, fsync, rename) and fsync the staging directory; rename staging-* to
// ckpt-<stamp> (RENAME_NOREPLACE, or check-then-rename under the key's lock where the
// filesystem lacks it, as GlusterFS's FUSE client does) and fsync the key directory. Only
// then prune committed generations beyond `keep`, oldest first. A crash at any point leaves either
// the old generations plus a staging leftover, or the new generation complete.
//
// Reading: only a ckpt-* directory (a real one: symlinks are never followed) whose
// manifest parses, names this namespace and key, and verifies is ever returned; a newer
// one that fails is renamed to failed-<stamp> with the reason, never deleted. Names
// become paths only after validate_name(), and everything below the base is reached with
// *at() calls and O_NOFOLLOW from directory fds.
//
// Trust: the base lies under an allowed root (the node's, see managed/store_layout.h). The
// root must be owned by us (root) and not writable by group or others, and so must every
// directory from it down to a key (openat2 without symlinks, base/beneath.h); ARCH never
// chmods or chowns a directory it did not create. Deletes work from the key's fd, never
// follow a symlink and never cross a mount point (a directory whose mount differs from its
// parent's is refused), so they never leave the store.
//
// Length (~830 lines): one protocol (layout, lock, commit, the reader's trust rule, seals,
// removal that never leaves the store) whose parts share the same fd-relative helpers and
// invariants; kept in one file so the protocol can be read top to bottom.
#include "store/checkpoint_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/core.h>
#include <stdio.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <memory>

#include "base/beneath.h"
#include "base/clock.h"
#include "base/file_util.h"
#include "base/names.h"
#include "managed/store_layout.h"
#include "store/seal.h"
#include "version.h"

namespace arch {
namespace {

constexpr std::string_view kCkptPrefix = "ckpt-";
constexpr std::string_view kFailedPrefix = "failed-";
constexpr std::string_view kStagingPrefix = "staging-";
constexpr const char* kLockName = ".lock";
constexpr const char* kReasonName = "reason.txt";
constexpr const char* kDumpLogsName = "dump-logs";
constexpr const char* kManifestTemp = ".manifest.json.tmp";
constexpr std::size_t kMaxManifestSize = 64 << 20;
constexpr int64_t kNanos = 1'000'000'000;

// ---- time stamps -------------------------------------------------------------------

int64_t now_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t{ts.tv_sec} * kNanos + ts.tv_nsec;
}

// yyyymmddThhmmss.nnnnnnnnnZ
std::string stamp(int64_t ns) {
  return format_utc_ns(ns, UtcPrecision::kNanos, true);
}

std::string rfc3339(int64_t ns) {
  return format_utc_ns(ns, UtcPrecision::kNanos);
}

std::optional<int64_t> parse_stamp(std::string_view s) {
  if (s.size() != 26 || s[8] != 'T' || s[15] != '.' || s[25] != 'Z') return std::nullopt;
  auto num = [&](std::size_t pos, std::size_t len) -> std::optional<int64_t> {
    int64_t v = 0;
    for (std::size_t i = pos; i < pos + len; ++i) {
      if (s[i] < '0' || s[i] > '9') return std::nullopt;
      v = v * 10 + (s[i] - '0');
    }
    return v;
  };
  auto year = num(0, 4), mon = num(4, 2), day = num(6, 2), hour = num(9, 2), min = num(11, 2),
       sec = num(13, 2), nsec = num(16, 9);
  if (!year || !mon || !day || !hour || !min || !sec || !nsec) return std::nullopt;
  if (*year < 1970 || *year > 2261) return std::nullopt;  // nanoseconds fit in int64
  if (*mon < 1 || *mon > 12 || *day < 1 || *day > 31 || *hour > 23 || *min > 59 || *sec > 60) {
    return std::nullopt;
  }
  std::tm tm{};
  tm.tm_year = static_cast<int>(*year - 1900);
  tm.tm_mon = static_cast<int>(*mon - 1);
  tm.tm_mday = static_cast<int>(*day);
  tm.tm_hour = static_cast<int>(*hour);
  tm.tm_min = static_cast<int>(*min);
  tm.tm_sec = static_cast<int>(*sec);
  return int64_t{::timegm(&tm)} * kNanos + *nsec;
}

// ---- directory entries -------------------------------------------------------------

enum class Kind { kCkpt, kFailed, kStaging, kOther };

Kind kind_of(std::string_view name) {
  if (name.starts_with(kCkptPrefix) && parse_stamp(name.substr(kCkptPrefix.size()))) {
    return Kind::kCkpt;
  }
  if (name.starts_with(kFailedPrefix) && parse_stamp(name.substr(kFailedPrefix.size()))) {
    return Kind::kFailed;
  }
  if (name.starts_with(kStagingPrefix) && name.size() > kStagingPrefix.size()) {
    return Kind::kStaging;
  }
  return Kind::kOther;
}

std::optional<int64_t> stamp_of(std::string_view name) {
  auto dash = name.find('-');
  if (dash == std::string_view::npos) return std::nullopt;
  return parse_stamp(name.substr(dash + 1));
}

Result<std::vector<std::string>> dir_names(int dirfd) {
  return list_directory(dirfd);
}

// Names of the real (not symlinked) directories of one kind in `dirfd`, newest first.
Result<std::vector<std::string>> entries_of(int dirfd, Kind kind) {
  auto names = dir_names(dirfd);
  if (!names) return names;
  std::vector<std::string> out;
  for (auto& name : *names) {
    struct stat st {};
    if (kind_of(name) != kind) continue;
    if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode)) {
      continue;
    }
    out.push_back(std::move(name));
  }
  std::sort(out.rbegin(), out.rend());
  return out;
}

Result<UniqueFd> open_dir_at(int parent, const std::string& name, const std::string& path) {
  int fd = retry_eintr([&] {
    return ::openat(parent, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  });
  if (fd < 0) return fail_errno("open " + path);
  return UniqueFd(fd);
}

// Creates (0700) if missing and opens a store directory: one we did not create must be
// ours and not writable by group or others (another user could plant checkpoints in it);
// it is never chmod'ed.
Result<UniqueFd> make_dir_at(int parent, const std::string& name, const std::string& path) {
  return open_trusted_path(parent, name, dirname_of(path), BeneathOptions{.create = true});
}

// A directory on another mount than its parent (a bind or a filesystem mounted inside the
// store): deletes never descend into it.
Result<void> check_same_mount(int parent, int child, const std::string& name) {
  struct stat ps {
  }, cs{};
  if (::fstat(parent, &ps) != 0 || ::fstat(child, &cs) != 0) return fail_errno("stat " + name);
  auto pm = mount_id_of(parent);
  auto cm = mount_id_of(child);
  if (!pm || !cm) return fail_errno("statx " + name);
  if (ps.st_dev != cs.st_dev || *pm != *cm) {
    return std::unexpected(
        Error(name + ": a mount point inside the store; refusing to delete across it", EXDEV));
  }
  return {};
}

Result<void> fsync_fd(int fd, const std::string& what) {
  if (::fsync(fd) != 0) return fail_errno("fsync " + what);
  return {};
}

// Removes `name` in `parent` and everything below it, never following a symlink.
// Already gone counts as removed.
Result<void> remove_tree_at(int parent, const std::string& name) {
  struct stat st {};
  if (::fstatat(parent, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return {};
    return fail_errno("stat " + name);
  }
  if (S_ISDIR(st.st_mode)) {
    auto dir = open_dir_at(parent, name, name);
    if (!dir) return std::unexpected(dir.error());
    if (auto ok = check_same_mount(parent, dir->get(), name); !ok) return ok;
    auto names = dir_names(dir->get());
    if (!names) return std::unexpected(names.error().wrap(name));
    for (const auto& child : *names) {
      if (auto r = remove_tree_at(dir->get(), child); !r)
        return std::unexpected(r.error().wrap(name));
    }
  }
  if (::unlinkat(parent, name.c_str(), S_ISDIR(st.st_mode) ? AT_REMOVEDIR : 0) != 0 &&
      errno != ENOENT) {
    return fail_errno("remove " + name);
  }
  return {};
}

// Bytes in the regular files below `dirfd` (best effort, symlinks not followed).
uint64_t tree_size(int dirfd) {
  uint64_t total = 0;
  auto names = dir_names(dirfd);
  if (!names) return 0;
  for (const auto& name : *names) {
    struct stat st {};
    if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    if (S_ISREG(st.st_mode)) {
      total += static_cast<uint64_t>(st.st_size);
    } else if (S_ISDIR(st.st_mode)) {
      auto sub = open_dir_at(dirfd, name, name);
      if (sub) total += tree_size(sub->get());
    }
  }
  return total;
}

// Reads a small regular file in `dirfd` without following a symlink.
Result<std::string> read_at(int dirfd, const std::string& name, std::size_t max_bytes) {
  int fd = retry_eintr([&] {
    return ::openat(dirfd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  });
  if (fd < 0) return fail_errno("open " + name);
  UniqueFd owned(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0) return fail_errno("stat " + name);
  if (!S_ISREG(st.st_mode)) return fail(name + ": not a regular file");
  auto data = read_all(fd, max_bytes);
  if (!data) return std::unexpected(data.error().wrap(name));
  return data;
}

// Durable write of `name` in `dirfd` (0600): temp file, fsync, rename, fsync the directory.
Result<void> write_at(int dirfd, const std::string& name, const std::string& temp,
                      std::string_view data) {
  ::unlinkat(dirfd, temp.c_str(), 0);
  int fd = retry_eintr([&] {
    return ::openat(dirfd, temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                    0600);
  });
  if (fd < 0) return fail_errno("create " + temp);
  UniqueFd owned(fd);
  auto undo = [&](Error e) {
    ::unlinkat(dirfd, temp.c_str(), 0);
    return std::unexpected(std::move(e));
  };
  if (auto w = write_all(fd, data); !w) return undo(w.error().wrap("write " + name));
  if (::fsync(fd) != 0) return undo(errno_error("fsync " + name));
  owned.reset();
  if (::renameat(dirfd, temp.c_str(), dirfd, name.c_str()) != 0) {
    return undo(errno_error("rename " + temp + " to " + name));
  }
  return fsync_fd(dirfd, "directory of " + name);
}

// Makes a staging tree private (files 0600, directories 0700) and durable (fsync each).
Result<void> seal_tree(int dirfd) {
  return walk_checkpoint_dir(dirfd, [](const CheckpointEntry& e) -> Result<void> {
    bool dir = S_ISDIR(e.st.st_mode);
    int flags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC | (dir ? O_DIRECTORY : O_NONBLOCK);
    int fd = retry_eintr([&] { return ::openat(e.parent_fd, e.name.c_str(), flags); });
    if (fd < 0) return fail_errno("open " + e.path);
    UniqueFd owned(fd);
    if (::fchmod(fd, dir ? 0700 : 0600) != 0) return fail_errno("chmod " + e.path);
    return fsync_fd(fd, e.path);
  });
}

// Renames `from` in `dirfd` to `<prefix><stamp>`, the stamp now or just past the newest
// existing name with that prefix. Returns the new name.
Result<std::string> rename_to_stamped(int dirfd, const std::string& from, std::string_view prefix) {
  auto names = dir_names(dirfd);
  if (!names) return std::unexpected(names.error());
  int64_t t = now_ns();
  for (const auto& name : *names) {
    if (!name.starts_with(prefix)) continue;
    if (auto s = parse_stamp(std::string_view(name).substr(prefix.size())); s && *s >= t) {
      t = *s + 1;
    }
  }
  for (int attempt = 0; attempt < 100; ++attempt, ++t) {
    std::string to = std::string(prefix) + stamp(t);
    if (::renameat2(dirfd, from.c_str(), dirfd, to.c_str(), RENAME_NOREPLACE) == 0) return to;
    if (errno == EEXIST) continue;
    if (errno != EINVAL && errno != ENOSYS) return fail_errno("rename " + from + " to " + to);
    // Filesystems without RENAME_NOREPLACE (GlusterFS's FUSE client answers EINVAL): the
    // caller holds the key's lock, so no other ARCH writer can take the name between this
    // check and the plain rename.
    struct stat st {};
    if (::fstatat(dirfd, to.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) continue;
    if (errno != ENOENT) return fail_errno("stat " + to);
    if (::renameat(dirfd, from.c_str(), dirfd, to.c_str()) == 0) return to;
    return fail_errno("rename " + from + " to " + to);
  }
  return fail("rename " + from + ": no free name");
}

std::string random_hex() {
  uint64_t r = 0;
  if (::getrandom(&r, sizeof r, 0) != sizeof r) {
    r = static_cast<uint64_t>(now_ns()) ^ (static_cast<uint64_t>(::getpid()) << 32);
  }
  return fmt::format("{:016x}", r);
}

// Errors that say nothing about a checkpoint's contents: do not move it aside for them.
bool environmental(const Error& e) {
  switch (e.code()) {
    case EMFILE:
    case ENFILE:
    case ENOMEM:
    case EAGAIN:
    case EINTR:
    case ENOKEY:  // this node has no key: the checkpoint may be fine
      return true;
    default:
      return false;
  }
}

std::unexpected<Error> no_key() {
  return std::unexpected(Error(
      "no node key to check the checkpoint's seal (create one with `archctl key init`)", ENOKEY));
}

// Reads the committed generation `name` in the key directory, checks its seal before using
// anything in it, then every file against the manifest.
Result<Manifest> load_verified(int keyfd, const std::string& name, std::string_view ns,
                               std::string_view key, const Keyring* keys,
                               VerifyScope scope = VerifyScope::kAllFiles) {
  if (keys == nullptr || keys->empty()) return no_key();
  auto dir = open_dir_at(keyfd, name, name);
  if (!dir) return std::unexpected(dir.error());
  auto text = read_at(dir->get(), kManifestFileName, kMaxManifestSize);
  if (!text) return std::unexpected(text.error());
  auto m = open_sealed_manifest(*text, *keys);
  if (!m) return m;
  if (m->ns != ns || m->key != key) {
    return fail(fmt::format("manifest is for {}/{}, not {}/{}", m->ns, m->key, ns, key));
  }
  if (auto ok = verify_manifest(dir->get(), *m, scope); !ok) return std::unexpected(ok.error());
  return m;
}

std::string trim_newlines(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

// One store directory as list() reports it; nothing when it vanished (pruned) meanwhile.
std::optional<CheckpointInfo> describe(int keyfd, const std::string& name, Kind kind,
                                       std::string_view ns, std::string_view key,
                                       const std::string& key_path, bool verify,
                                       const Keyring* keys) {
  CheckpointInfo info;
  info.name = name;
  info.path = key_path + "/" + name;
  info.ns = ns;
  info.key = key;
  if (auto s = stamp_of(name)) info.created = rfc3339(*s);
  auto dir = open_dir_at(keyfd, name, name);
  if (!dir && dir.error().code() == ENOENT) return std::nullopt;
  if (!dir) {
    info.state = kind == Kind::kStaging ? CheckpointState::kStaging : CheckpointState::kCorrupt;
    info.reason = dir.error().message();
    return info;
  }
  info.total_size = tree_size(dir->get());
  if (kind == Kind::kStaging) {
    info.state = CheckpointState::kStaging;
    struct stat st {};
    if (::fstat(dir->get(), &st) == 0) {
      info.created = rfc3339(int64_t{st.st_mtim.tv_sec} * kNanos + st.st_mtim.tv_nsec);
    }
    return info;
  }
  auto text = read_at(dir->get(), kManifestFileName, kMaxManifestSize);
  auto m = text ? parse_manifest(*text) : std::unexpected(text.error());
  if (m) {
    if (!m->created.empty()) info.created = m->created;
    info.manifest = *m;
  }
  if (kind == Kind::kFailed) {
    info.state = CheckpointState::kFailed;
    auto reason = read_at(dir->get(), kReasonName, 1 << 20);
    info.reason = reason ? trim_newlines(*reason) : "(no reason recorded)";
    return info;
  }
  auto sealed = m && keys != nullptr && !keys->empty() ? open_sealed_manifest(*text, *keys) : m;
  if (!m) {
    info.state = CheckpointState::kCorrupt;
    info.reason = m.error().message();
  } else if (!sealed) {
    info.state = CheckpointState::kCorrupt;
    info.reason = sealed.error().message();
  } else if (m->ns != ns || m->key != key) {
    info.state = CheckpointState::kCorrupt;
    info.reason = fmt::format("manifest is for {}/{}", m->ns, m->key);
  } else if (verify) {
    auto ok = verify_manifest(dir->get(), *m);
    info.state = ok ? CheckpointState::kVerified : CheckpointState::kCorrupt;
    if (!ok) info.reason = ok.error().message();
  } else {
    info.state = CheckpointState::kCommitted;
  }
  return info;
}

// Appends the directories of one key to `out`, committed ones newest first, then failed
// ones, then staging leftovers. A store, namespace or key that does not exist holds none.
Result<void> list_key(int basefd, const std::string& base_path, std::string_view ns,
                      std::string_view key, bool verify, const Keyring* keys,
                      std::vector<CheckpointInfo>& out) {
  const std::string ns_path = base_path + "/" + std::string(ns);
  const std::string key_path = ns_path + "/" + std::string(key);
  auto absent = [](const Error& e) { return e.code() == ENOENT; };
  auto ns_dir = open_dir_at(basefd, std::string(ns), ns_path);
  if (!ns_dir) return absent(ns_dir.error()) ? Result<void>() : std::unexpected(ns_dir.error());
  auto key_dir = open_dir_at(ns_dir->get(), std::string(key), key_path);
  if (!key_dir) return absent(key_dir.error()) ? Result<void>() : std::unexpected(key_dir.error());
  for (Kind kind : {Kind::kCkpt, Kind::kFailed, Kind::kStaging}) {
    auto names = entries_of(key_dir->get(), kind);
    if (!names) return std::unexpected(names.error().wrap("list " + key_path));
    for (const auto& name : *names) {
      auto info = describe(key_dir->get(), name, kind, ns, key, key_path, verify, keys);
      if (info) out.push_back(std::move(*info));
    }
  }
  return {};
}

Result<void> mkdir_parents(const std::string& path) {
  for (std::size_t pos = 1; pos <= path.size(); ++pos) {
    if (pos != path.size() && path[pos] != '/') continue;
    std::string prefix = path.substr(0, pos);
    if (::mkdir(prefix.c_str(), 0700) != 0 && errno != EEXIST) return fail_errno("mkdir " + prefix);
  }
  return {};
}

}  // namespace

// ---- Staging -----------------------------------------------------------------------

Staging& Staging::operator=(Staging&& other) noexcept {
  if (this != &other) {
    discard();
    parent_ = std::move(other.parent_);
    dir_ = std::move(other.dir_);
    name_ = std::move(other.name_);
    path_ = std::move(other.path_);
    ns_ = std::move(other.ns_);
    key_ = std::move(other.key_);
  }
  return *this;
}

void Staging::discard() {
  dir_.reset();
  if (parent_.valid() && !name_.empty()) (void)remove_tree_at(parent_.get(), name_);
  parent_.reset();
}

std::string_view to_string(CheckpointState state) {
  switch (state) {
    case CheckpointState::kCommitted:
      return "committed";
    case CheckpointState::kVerified:
      return "verified";
    case CheckpointState::kCorrupt:
      return "corrupt";
    case CheckpointState::kFailed:
      return "failed";
    case CheckpointState::kStaging:
      return "staging";
  }
  return "unknown";
}

// ---- CheckpointStore ---------------------------------------------------------------

CheckpointStore::CheckpointStore(std::string base, int keep, std::string root,
                                 std::shared_ptr<const Keyring> keys)
    : base_(std::move(base)),
      root_(std::move(root)),
      keep_(std::max(keep, 1)),
      keys_(std::move(keys)) {
  while (base_.size() > 1 && base_.back() == '/') base_.pop_back();
  while (root_.size() > 1 && root_.back() == '/') root_.pop_back();
  if (root_.empty()) root_ = base_;
}

Result<UniqueFd> CheckpointStore::open_base(bool create) const {
  if (base_.empty()) return fail("checkpoint store: no base directory");
  if (!path_is_under(base_, root_)) {
    return std::unexpected(Error(base_ + " is not under its root " + root_, EPERM));
  }
  // The root is the node's (its config): created when it is the store itself, as the
  // default store is on first use; a named root must exist.
  if (create && root_ == base_) {
    if (auto made = mkdir_parents(base_); !made) return std::unexpected(made.error());
  }
  auto root = open_trusted_root(root_);
  if (!root) return std::unexpected(root.error().wrap("store root"));
  if (root_ == base_) return root;
  return open_trusted_path(root->get(), relative_to_root(base_, root_), root_,
                           BeneathOptions{.create = create});
}

Result<KeyLock> CheckpointStore::lock(std::string_view ns, std::string_view key,
                                      LockTimeout timeout) const {
  if (auto ok = validate_owner(ns); !ok) return std::unexpected(ok.error());
  if (auto ok = validate_name("key", key); !ok) return std::unexpected(ok.error());
  const std::string ns_path = base_ + "/" + std::string(ns);
  const std::string key_path = ns_path + "/" + std::string(key);
  auto deadline = std::chrono::steady_clock::now() + timeout.value_or(std::chrono::milliseconds(0));
  // A holder that removes the key deletes its directory: then we start over (ENOENT).
  for (int attempt = 0;; ++attempt) {
    auto retry = [&](const Error& e) { return e.code() == ENOENT && attempt < 100; };
    auto base = open_base(/*create=*/true);
    if (!base) return std::unexpected(base.error().wrap("lock"));
    auto ns_dir = make_dir_at(base->get(), std::string(ns), ns_path);
    if (!ns_dir) {
      if (retry(ns_dir.error())) continue;
      return std::unexpected(ns_dir.error().wrap("lock"));
    }
    auto key_dir = make_dir_at(ns_dir->get(), std::string(key), key_path);
    if (!key_dir) {
      if (retry(key_dir.error())) continue;
      return std::unexpected(key_dir.error().wrap("lock"));
    }
    LockTimeout remaining = timeout;
    if (timeout) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      remaining = std::max(left, std::chrono::milliseconds(timeout->count() > 0 ? 1 : 0));
    }
    auto file_lock = FileLock::acquire_at(key_dir->get(), kLockName, remaining);
    if (!file_lock) {
      if (retry(file_lock.error())) continue;
      return std::unexpected(file_lock.error().wrap("lock " + key_path));
    }
    KeyLock held;
    held.base_ = base_;
    held.ns_ = ns;
    held.key_ = key;
    held.path_ = key_path;
    held.dir_ = std::move(*key_dir);
    held.lock_ = std::move(*file_lock);
    return held;
  }
}

Result<void> CheckpointStore::check_lock(const KeyLock& lock) const {
  if (!lock.held() || !lock.dir_.valid()) return fail("key lock not held");
  if (lock.base_ != base_) return fail("key lock belongs to the store at " + lock.base_);
  return {};
}

Result<void> CheckpointStore::check_lock(std::string_view ns, std::string_view key,
                                         const KeyLock& lock) const {
  if (auto ok = check_lock(lock); !ok) return ok;
  if (lock.ns_ != ns || lock.key_ != key) {
    return fail(fmt::format("key lock is for {}/{}, not {}/{}", lock.ns_, lock.key_, ns, key));
  }
  return {};
}

Result<std::string> CheckpointStore::child_of_key(const std::string& path,
                                                  const KeyLock& lock) const {
  if (auto ok = check_lock(lock); !ok) return std::unexpected(ok.error());
  std::string name = path;
  if (path.starts_with(lock.path_ + "/")) name = path.substr(lock.path_.size() + 1);
  if (name.empty() || name.find('/') != std::string::npos || kind_of(name) == Kind::kOther) {
    return fail(path + ": not a checkpoint directory of " + lock.path_);
  }
  return name;
}

Result<std::size_t> CheckpointStore::cleanup_stale(const KeyLock& lock) const {
  if (auto ok = check_lock(lock); !ok) return std::unexpected(ok.error());
  auto names = dir_names(lock.dirfd());
  if (!names) return std::unexpected(names.error().wrap("cleanup " + lock.path_));
  std::size_t removed = 0;
  for (const auto& name : *names) {
    if (kind_of(name) != Kind::kStaging || lock.own_staging_.contains(name)) continue;
    if (auto r = remove_tree_at(lock.dirfd(), name); !r) {
      return std::unexpected(r.error().wrap("cleanup " + lock.path_));
    }
    ++removed;
  }
  if (removed > 0) {
    if (auto ok = fsync_fd(lock.dirfd(), lock.path_); !ok) return std::unexpected(ok.error());
  }
  return removed;
}

Result<Staging> CheckpointStore::begin(const KeyLock& lock) const {
  if (auto ok = check_lock(lock); !ok) return std::unexpected(ok.error());
  std::string name;
  for (int attempt = 0;; ++attempt) {
    name = std::string(kStagingPrefix) + random_hex();
    if (::mkdirat(lock.dirfd(), name.c_str(), 0700) == 0) break;
    if (errno != EEXIST || attempt == 10) {
      return fail_errno("begin: mkdir " + lock.path_ + "/" + name);
    }
  }
  Staging staging;
  staging.name_ = name;
  staging.path_ = lock.path_ + "/" + name;
  staging.ns_ = lock.ns_;
  staging.key_ = lock.key_;
  int parent = ::fcntl(lock.dirfd(), F_DUPFD_CLOEXEC, 0);
  if (parent < 0) {
    ::unlinkat(lock.dirfd(), name.c_str(), AT_REMOVEDIR);
    return fail_errno("begin: dup");
  }
  staging.parent_.reset(parent);  // from here on, the destructor removes the directory
  auto dir = open_dir_at(lock.dirfd(), name, staging.path_);
  if (!dir) return std::unexpected(dir.error().wrap("begin"));
  staging.dir_ = std::move(*dir);
  lock.own_staging_.insert(name);
  return staging;
}

Result<std::string> CheckpointStore::commit(Staging&& staging, Manifest base,
                                            const KeyLock& lock) const {
  return commit_impl(std::move(staging), std::move(base), lock, /*prune_after=*/true);
}

Result<std::string> CheckpointStore::commit_unpruned(Staging&& staging, Manifest base,
                                                     const KeyLock& lock) const {
  return commit_impl(std::move(staging), std::move(base), lock, /*prune_after=*/false);
}

Result<std::string> CheckpointStore::commit_impl(Staging&& staging, Manifest base,
                                                 const KeyLock& lock, bool prune_after) const {
  Staging s = std::move(staging);  // removed on every failure path below
  auto failed = [](const Error& e) { return std::unexpected(e.wrap("commit")); };
  if (auto ok = check_lock(lock); !ok) return failed(ok.error());
  const NodeKey* seal_key = keys_ ? keys_->active() : nullptr;
  if (seal_key == nullptr) return failed(no_key().error().wrap("seal"));
  if (!s.dir_.valid() || s.ns_ != lock.ns_ || s.key_ != lock.key_) {
    return failed(Error("staging directory does not belong to " + lock.path_));
  }
  // 1. The manifest, over every file the writer left.
  if ((!base.ns.empty() && base.ns != lock.ns_) || (!base.key.empty() && base.key != lock.key_)) {
    return failed(Error(fmt::format("manifest names {}/{}, the lock {}/{}", base.ns, base.key,
                                    lock.ns_, lock.key_)));
  }
  base.format_version = kManifestFormatVersion;
  base.ns = lock.ns_;
  base.key = lock.key_;
  if (base.created.empty()) base.created = rfc3339(now_ns());
  if (base.versions.arch.empty()) base.versions.arch = kVersion;
  ::unlinkat(s.dirfd(), kManifestTemp, 0);
  auto m = build_manifest_files(s.dirfd(), std::move(base));
  if (!m) return failed(m.error().wrap(s.path_));
  // 2. Private and durable: every file and directory.
  if (auto ok = seal_tree(s.dirfd()); !ok) return failed(ok.error().wrap(s.path_));
  if (::fchmod(s.dirfd(), 0700) != 0) return failed(errno_error("chmod " + s.path_));
  // 3. The manifest, sealed with the node's active key, last (its write fsyncs the staging
  // directory too).
  auto text = seal_manifest(std::move(*m), *seal_key);
  if (!text) return failed(text.error().wrap(s.path_));
  if (auto ok = write_at(s.dirfd(), kManifestFileName, kManifestTemp, *text); !ok) {
    return failed(ok.error().wrap(s.path_));
  }
  // 4. The commit point: staging-* becomes ckpt-<stamp>.
  auto name = rename_to_stamped(lock.dirfd(), s.name_, kCkptPrefix);
  if (!name) return failed(name.error().wrap(lock.path_));
  s.name_.clear();  // committed: the destructor leaves it alone
  s.parent_.reset();
  if (auto ok = fsync_fd(lock.dirfd(), lock.path_); !ok) return failed(ok.error());
  // 5. Only now may older generations go.
  if (prune_after) prune(lock);
  return lock.path_ + "/" + *name;
}

void CheckpointStore::prune(const KeyLock& lock) const {
  auto names = entries_of(lock.dirfd(), Kind::kCkpt);
  if (!names) return;
  bool removed = false;
  for (std::size_t i = static_cast<std::size_t>(keep_); i < names->size(); ++i) {
    removed = remove_tree_at(lock.dirfd(), (*names)[i]).has_value() || removed;
  }
  // Best effort: a generation that could not be removed is pruned by the next commit.
  if (removed) (void)fsync_fd(lock.dirfd(), lock.path_);
}

Result<UniqueFd> CheckpointStore::open_key_dir(std::string_view ns, std::string_view key) const {
  if (auto ok = validate_owner(ns); !ok) return std::unexpected(ok.error());
  if (auto ok = validate_name("key", key); !ok) return std::unexpected(ok.error());
  auto base = open_base(/*create=*/false);
  if (!base) return std::unexpected(base.error());
  const std::string ns_path = base_ + "/" + std::string(ns);
  auto ns_dir = open_dir_at(base->get(), std::string(ns), ns_path);
  if (!ns_dir) return std::unexpected(ns_dir.error());
  return open_dir_at(ns_dir->get(), std::string(key), ns_path + "/" + std::string(key));
}

Result<Manifest> CheckpointStore::read_verified(std::string_view ns, std::string_view key,
                                                const std::string& name, bool check_files) const {
  if (kind_of(name) != Kind::kCkpt || name.find('/') != std::string::npos) {
    return std::unexpected(Error(name + ": not a committed generation's name", ENOENT));
  }
  if (keys() == nullptr) return no_key();
  auto keyfd = open_key_dir(ns, key);
  if (!keyfd) return std::unexpected(keyfd.error());
  if (check_files) return load_verified(keyfd->get(), name, ns, key, keys_.get());
  auto dir = open_dir_at(keyfd->get(), name, name);
  if (!dir) return std::unexpected(dir.error());
  auto text = read_at(dir->get(), kManifestFileName, kMaxManifestSize);
  if (!text) return std::unexpected(text.error());
  auto m = open_sealed_manifest(*text, *keys_);
  if (!m) return m;
  if (m->ns != ns || m->key != key) {
    return fail(fmt::format("manifest is for {}/{}, not {}/{}", m->ns, m->key, ns, key));
  }
  return m;
}

Result<std::vector<std::string>> CheckpointStore::committed_names(std::string_view ns,
                                                                  std::string_view key) const {
  auto keyfd = open_key_dir(ns, key);
  if (!keyfd) {
    if (keyfd.error().code() == ENOENT) return std::vector<std::string>{};
    return std::unexpected(keyfd.error());
  }
  return entries_of(keyfd->get(), Kind::kCkpt);
}

Result<std::vector<CheckpointInfo>> CheckpointStore::list(std::string_view ns, std::string_view key,
                                                          bool verify) const {
  if (auto ok = validate_owner(ns); !ok) return std::unexpected(ok.error());
  if (auto ok = validate_name("key", key); !ok) return std::unexpected(ok.error());
  std::vector<CheckpointInfo> out;
  auto base = open_base(/*create=*/false);
  if (!base) {
    if (base.error().code() == ENOENT) return out;
    return std::unexpected(base.error());
  }
  if (auto ok = list_key(base->get(), base_, ns, key, verify, keys_.get(), out); !ok)
    return std::unexpected(ok.error());
  return out;
}

Result<std::vector<CheckpointInfo>> CheckpointStore::list_all(bool verify) const {
  std::vector<CheckpointInfo> out;
  auto base = open_base(/*create=*/false);
  if (!base) {
    if (base.error().code() == ENOENT) return out;
    return std::unexpected(base.error());
  }
  auto namespaces = dir_names(base->get());
  if (!namespaces) return std::unexpected(namespaces.error().wrap("list " + base_));
  std::sort(namespaces->begin(), namespaces->end());
  for (const auto& ns : *namespaces) {
    if (!validate_owner(ns)) continue;
    auto ns_dir = open_dir_at(base->get(), ns, base_ + "/" + ns);
    if (!ns_dir) continue;  // not a directory (or a symlink): not ours
    auto keys = dir_names(ns_dir->get());
    if (!keys) return std::unexpected(keys.error().wrap("list " + base_ + "/" + ns));
    std::sort(keys->begin(), keys->end());
    for (const auto& key : *keys) {
      if (!validate_name("key", key)) continue;
      if (auto ok = list_key(base->get(), base_, ns, key, verify, keys_.get(), out); !ok)
        return std::unexpected(ok.error());
    }
  }
  return out;
}

Result<CommittedCheckpoint> CheckpointStore::latest_verified(std::string_view ns,
                                                             std::string_view key,
                                                             const KeyLock& lock,
                                                             VerifyScope scope) const {
  if (auto ok = check_lock(ns, key, lock); !ok) return std::unexpected(ok.error());
  auto names = entries_of(lock.dirfd(), Kind::kCkpt);
  if (!names) return std::unexpected(names.error().wrap(lock.path_));
  CommittedCheckpoint found;
  for (const auto& name : *names) {
    auto m = load_verified(lock.dirfd(), name, ns, key, keys_.get(), scope);
    if (m) {
      found.path = lock.path_ + "/" + name;
      found.manifest = std::move(*m);
      return found;
    }
    if (environmental(m.error())) return std::unexpected(m.error().wrap(lock.path_ + "/" + name));
    std::string reason = m.error().message();
    auto moved = move_aside(lock.path_ + "/" + name, reason, lock);
    found.skipped.push_back(
        name + ": " + reason +
        (moved ? "" : " (could not move aside: " + moved.error().message() + ")"));
  }
  std::string message = fmt::format("no verified checkpoint for {}/{}", ns, key);
  if (!found.skipped.empty()) {
    message += fmt::format(" ({} moved aside: {})", found.skipped.size(), found.skipped.front());
  }
  return std::unexpected(Error(message, ENOENT));
}

Result<void> CheckpointStore::move_aside(const std::string& path, std::string_view reason,
                                         const KeyLock& lock) const {
  auto name = child_of_key(path, lock);
  if (!name) return std::unexpected(name.error().wrap("move aside"));
  auto failed = [&](const Error& e) { return std::unexpected(e.wrap("move aside " + path)); };
  Kind kind = kind_of(*name);
  struct stat st {};
  if (kind == Kind::kFailed) return failed(Error("already moved aside"));
  if (::fstatat(lock.dirfd(), name->c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return failed(errno_error("stat"));
  }
  if (!S_ISDIR(st.st_mode)) return failed(Error("not a directory"));
  auto to = rename_to_stamped(lock.dirfd(), *name, kFailedPrefix);
  if (!to) return failed(to.error());
  auto dir = open_dir_at(lock.dirfd(), *to, lock.path_ + "/" + *to);
  if (!dir) return failed(dir.error());
  std::string text = std::string(reason) + "\n";
  if (auto ok = write_at(dir->get(), kReasonName, ".reason.txt.tmp", text); !ok) {
    return failed(ok.error());
  }
  if (auto ok = fsync_fd(lock.dirfd(), lock.path_); !ok) return failed(ok.error());
  return {};
}

Result<std::string> CheckpointStore::keep_failed_dump(
    Staging&& staging, std::string_view reason,
    const std::vector<std::pair<std::string, std::string>>& files, int kept,
    const KeyLock& lock) const {
  Staging s = std::move(staging);  // removed on every early return
  auto failed = [&](const Error& e) { return std::unexpected(e.wrap("keep failed dump")); };
  if (auto ok = check_lock(lock); !ok) return failed(ok.error());
  if (kept <= 0) return std::string();
  if (!s.dir_.valid() || s.ns_ != lock.ns_ || s.key_ != lock.key_) {
    return failed(Error("staging directory does not belong to " + lock.path_));
  }
  // The images may be large (and the store full): they go first.
  auto names = dir_names(s.dirfd());
  if (!names) return failed(names.error());
  for (const auto& name : *names) {
    if (auto r = remove_tree_at(s.dirfd(), name); !r) return failed(r.error());
  }
  if (::mkdirat(s.dirfd(), kDumpLogsName, 0700) != 0) return failed(errno_error("mkdir dump-logs"));
  auto logs = open_dir_at(s.dirfd(), kDumpLogsName, s.path_ + "/" + kDumpLogsName);
  if (!logs) return failed(logs.error());
  for (const auto& [name, content] : files) {
    if (auto ok = validate_name("log name", name); !ok) return failed(ok.error());
    if (auto ok = write_at(logs->get(), name, "." + name + ".tmp", content); !ok)
      return failed(ok.error());
  }
  if (auto ok = write_at(s.dirfd(), kReasonName, ".reason.txt.tmp", std::string(reason) + "\n");
      !ok) {
    return failed(ok.error());
  }
  auto to = rename_to_stamped(lock.dirfd(), s.name_, kFailedPrefix);
  if (!to) return failed(to.error());
  s.name_.clear();  // renamed: no longer the staging's to remove
  s.parent_.reset();
  if (auto ok = fsync_fd(lock.dirfd(), lock.path_); !ok) return failed(ok.error());
  prune_failed_dumps(lock, kept);
  return lock.path_ + "/" + *to;
}

void CheckpointStore::prune_failed_dumps(const KeyLock& lock, int kept) const {
  auto names = entries_of(lock.dirfd(), Kind::kFailed);  // newest first
  if (!names) return;
  int seen = 0;
  bool removed = false;
  for (const auto& name : *names) {
    struct stat st {};
    std::string logs = name + "/" + kDumpLogsName;
    if (::fstatat(lock.dirfd(), logs.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 ||
        !S_ISDIR(st.st_mode)) {
      continue;  // a moved-aside checkpoint, not a failed dump
    }
    if (++seen <= kept) continue;
    removed = remove_tree_at(lock.dirfd(), name).has_value() || removed;
  }
  if (removed) (void)fsync_fd(lock.dirfd(), lock.path_);
}

Result<void> CheckpointStore::remove(std::string_view ns, std::string_view key,
                                     const KeyLock& lock) const {
  if (auto ok = check_lock(ns, key, lock); !ok) return std::unexpected(ok.error());
  auto failed = [&](const Error& e) { return std::unexpected(e.wrap("remove " + lock.path_)); };
  auto names = dir_names(lock.dirfd());
  if (!names) return failed(names.error());
  for (const auto& name : *names) {
    if (name == kLockName) continue;
    if (auto r = remove_tree_at(lock.dirfd(), name); !r) return failed(r.error());
  }
  // The lock file goes last; waiters notice it is unlinked and start over (see FileLock).
  if (::unlinkat(lock.dirfd(), kLockName, 0) != 0 && errno != ENOENT) {
    return failed(errno_error("remove .lock"));
  }
  auto base = open_base(/*create=*/false);
  if (!base) return failed(base.error());
  auto ns_dir = open_dir_at(base->get(), lock.ns_, base_ + "/" + lock.ns_);
  if (!ns_dir) return failed(ns_dir.error());
  // ENOTEMPTY: a waiter already created a new lock file; the key lives on, empty.
  if (::unlinkat(ns_dir->get(), lock.key_.c_str(), AT_REMOVEDIR) != 0 && errno != ENOTEMPTY &&
      errno != ENOENT) {
    return failed(errno_error("rmdir"));
  }
  if (auto ok = fsync_fd(ns_dir->get(), base_ + "/" + lock.ns_); !ok) return failed(ok.error());
  return {};
}

Result<void> CheckpointStore::remove_one(const std::string& path, const KeyLock& lock) const {
  auto name = child_of_key(path, lock);
  if (!name) return std::unexpected(name.error().wrap("remove"));
  if (auto r = remove_tree_at(lock.dirfd(), *name); !r) {
    return std::unexpected(r.error().wrap("remove " + lock.path_));
  }
  if (auto ok = fsync_fd(lock.dirfd(), lock.path_); !ok) return std::unexpected(ok.error());
  return {};
}

bool CheckpointStore::has_committed(std::string_view ns, std::string_view key) const {
  // One implementation, shared with arch-runc's hot path (store_layout.cc).
  return has_committed_checkpoint(root_, base_, std::string(ns), std::string(key));
}

uint64_t committed_checkpoint_bytes(const std::string& dir) {
  auto text = read_file(dir + "/" + kManifestFileName);
  if (!text) return 0;
  auto manifest = parse_manifest(*text);
  uint64_t total = 0;
  if (manifest) {
    for (const auto& f : manifest->files) total += f.size;
  }
  return total;
}

}  // namespace arch
