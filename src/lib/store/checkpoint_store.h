// CheckpointStore: the on-disk home of checkpoints, one directory per (namespace, key),
// built in staging, committed by rename, read back only when the manifest verifies.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "base/file_lock.h"
#include "base/unique_fd.h"
#include "store/manifest.h"
#include "store/node_key.h"

namespace arch {

class CheckpointStore;

/// The exclusive lock on one key, taken by CheckpointStore::lock(). Checkpoint, restore and
/// delete of a key happen under it; different keys proceed in parallel. Move-only.
class KeyLock {
 public:
  [[nodiscard]] const std::string& ns() const { return ns_; }
  [[nodiscard]] const std::string& key() const { return key_; }
  /// The key's directory, `<base>/<ns>/<key>`.
  [[nodiscard]] const std::string& path() const { return path_; }
  /// An fd on the key's directory.
  [[nodiscard]] int dirfd() const { return dir_.get(); }
  [[nodiscard]] bool held() const { return lock_.held(); }

 private:
  friend class CheckpointStore;
  KeyLock() = default;
  std::string base_, ns_, key_, path_;
  UniqueFd dir_;
  FileLock lock_;
  mutable std::set<std::string> own_staging_;  ///< Begun under this lock: not stale.
};

/// A checkpoint being built: a private directory in the key's directory, removed with this
/// object unless it was committed. Writers fill it through path() or dirfd(). Move-only.
class Staging {
 public:
  Staging(Staging&& other) noexcept = default;
  Staging& operator=(Staging&& other) noexcept;
  Staging(const Staging&) = delete;
  Staging& operator=(const Staging&) = delete;
  ~Staging() { discard(); }

  [[nodiscard]] const std::string& path() const { return path_; }
  [[nodiscard]] int dirfd() const { return dir_.get(); }

 private:
  friend class CheckpointStore;
  Staging() = default;
  void discard();
  UniqueFd parent_, dir_;
  std::string name_, path_, ns_, key_;
};

/// What a directory in the store is.
enum class CheckpointState {
  kCommitted,  ///< Committed, its manifest parses (contents not hashed: list without verify).
  kVerified,   ///< Committed and every file matches the manifest.
  kCorrupt,    ///< Committed but the manifest is missing, unreadable or does not match.
  kFailed,     ///< Moved aside (corrupt or failed to restore); reason says why.
  kStaging,    ///< A checkpoint being written, or left by a writer that died.
};

/// The name of a state, for display: "committed", "verified", "corrupt", "failed", "staging".
std::string_view to_string(CheckpointState state);

/// One directory of the store, as list() sees it.
struct CheckpointInfo {
  std::string path;  ///< Absolute path of the directory.
  std::string name;  ///< "ckpt-...", "failed-..." or "staging-...".
  std::string ns, key;
  std::string created;  ///< RFC 3339 UTC, from the manifest or else from the name.
  CheckpointState state = CheckpointState::kCommitted;
  std::string reason;                ///< Why it is corrupt or failed.
  uint64_t total_size = 0;           ///< Bytes in its regular files.
  std::optional<Manifest> manifest;  ///< When it could be parsed.
};

/// A committed checkpoint whose manifest verified.
struct CommittedCheckpoint {
  std::string path;
  Manifest manifest;
  /// Newer generations that did not verify, each moved aside: "name: reason" (and, if the
  /// move failed, why). For the restore log: nothing is skipped silently.
  std::vector<std::string> skipped;
};

/// The bytes a committed checkpoint holds, from its manifest (0 when unreadable).
uint64_t committed_checkpoint_bytes(const std::string& dir);

/// The checkpoint store under a base directory. Layout: `<base>/<owner>/<key>/` (0700) with
/// `.lock`, `staging-<random>/`, `ckpt-<UTC time>/` (committed, manifest.json inside) and
/// `failed-<UTC time>/` (moved aside, reason.txt inside). See checkpoint_store.cc.
class CheckpointStore {
 public:
  /// `keep`: committed generations kept per key (at least 1). `root`: the allowed root the
  /// base lies under (see managed/store_layout.h), the trust anchor of every walk; empty:
  /// the base is its own root. `keys`: the node keys that seal commits (the active one) and
  /// verify reads; without them commit fails and latest_verified() refuses (error code
  /// ENOKEY, nothing moved aside).
  explicit CheckpointStore(std::string base, int keep = 2, std::string root = {},
                           std::shared_ptr<const Keyring> keys = nullptr);
  /// The base as its own root, with `keys`.
  CheckpointStore(std::string base, int keep, std::shared_ptr<const Keyring> keys)
      : CheckpointStore(std::move(base), keep, std::string(), std::move(keys)) {}

  [[nodiscard]] const std::string& base() const { return base_; }
  [[nodiscard]] const std::string& root() const { return root_; }
  /// The node keys (nullptr when the store has none).
  [[nodiscard]] const Keyring* keys() const {
    return keys_ && !keys_->empty() ? keys_.get() : nullptr;
  }

  /// Validates the names, creates the directories (0700) and locks the key, waiting as
  /// `timeout` says (std::nullopt: without limit; see LockTimeout).
  Result<KeyLock> lock(std::string_view ns, std::string_view key,
                       LockTimeout timeout = std::nullopt) const;

  /// Removes staging directories left by writers that died (those not begun under `lock`).
  /// Returns how many were removed.
  Result<std::size_t> cleanup_stale(const KeyLock& lock) const;

  /// Creates a new staging directory (0700) for a checkpoint of the locked key.
  Result<Staging> begin(const KeyLock& lock) const;

  /// Commits a staging directory: manifest over its files (ns, key, created and
  /// versions.arch filled in when empty), modes made 0600/0700, everything fsynced,
  /// manifest.json sealed with the active key (store/seal.h) and written last, renamed to
  /// ckpt-<time>, then older generations beyond
  /// `keep` pruned. Returns the committed path. On failure the staging directory is removed
  /// and the previous checkpoints are untouched (except when only the final fsync of the key
  /// directory fails: the generation is then in place but perhaps not yet durable).
  Result<std::string> commit(Staging&& staging, Manifest base, const KeyLock& lock) const;
  /// commit() without the pruning of older generations: a group member's generation
  /// (container/group_checkpoint.h) must not push out its last complete group generation
  /// before the group record is committed; prune_generations() runs after it.
  Result<std::string> commit_unpruned(Staging&& staging, Manifest base, const KeyLock& lock) const;
  /// Prunes committed generations of the locked key beyond `keep` (best effort).
  void prune_generations(const KeyLock& lock) const { prune(lock); }

  /// The committed generation `name` (a ckpt-* directory name) of ns/key, its seal checked
  /// before anything in it is used, the ns/key it names checked, and, when `check_files`,
  /// every file against it. Takes no lock (read only). Error code ENOENT when absent.
  Result<Manifest> read_verified(std::string_view ns, std::string_view key, const std::string& name,
                                 bool check_files) const;
  /// The names of the committed (ckpt-*) generations of ns/key, newest first; no lock.
  Result<std::vector<std::string>> committed_names(std::string_view ns, std::string_view key) const;

  /// Every checkpoint directory of one key, committed ones newest first, then failed ones
  /// newest first, then staging leftovers. Hashes every file only when `verify`.
  /// Takes no lock: a directory pruned meanwhile is left out.
  Result<std::vector<CheckpointInfo>> list(std::string_view ns, std::string_view key,
                                           bool verify = false) const;
  /// list() for every namespace and key in the store.
  Result<std::vector<CheckpointInfo>> list_all(bool verify = false) const;

  /// The newest committed checkpoint whose seal (store/seal.h) and files verify. Newer ones
  /// that do not (unsealed, foreign key, tampered, corrupt) are moved aside with the reason.
  /// Error code ENOENT when there is none, ENOKEY when the store has no keys. With
  /// VerifyScope::kDeferChunked, files carrying chunk digests (pages images) are checked by
  /// size only: the caller must check each chunk before it uses it (criu/page_server.h).
  Result<CommittedCheckpoint> latest_verified(std::string_view ns, std::string_view key,
                                              const KeyLock& lock,
                                              VerifyScope scope = VerifyScope::kAllFiles) const;

  /// Renames a ckpt-* or staging-* directory of the locked key to failed-<time> and
  /// records `reason` in its reason.txt.
  Result<void> move_aside(const std::string& path, std::string_view reason,
                          const KeyLock& lock) const;

  /// Keeps what a failed dump left to explain itself: everything in `staging` is removed,
  /// `files` (name -> content, e.g. the tails of CRIU's logs) are written into its
  /// `dump-logs/`, `reason` into reason.txt, and it is renamed to failed-<time>. Then the
  /// oldest failed dumps of the key (failed-* holding dump-logs/) beyond `kept` are removed
  /// (`kept` 0: this one too). Returns the failed-* path (empty when not kept).
  Result<std::string> keep_failed_dump(
      Staging&& staging, std::string_view reason,
      const std::vector<std::pair<std::string, std::string>>& files, int kept,
      const KeyLock& lock) const;

  /// Removes the key: every generation, failed and staging directory, the lock file and the
  /// key directory. The lock protects nothing afterwards: drop it.
  Result<void> remove(std::string_view ns, std::string_view key, const KeyLock& lock) const;

  /// Removes one ckpt-*, failed-* or staging-* directory of the locked key.
  Result<void> remove_one(const std::string& path, const KeyLock& lock) const;

  /// Whether a committed checkpoint appears to exist: a stat per entry, no lock, no hashing.
  /// For the container-create hot path; restore still goes through latest_verified().
  [[nodiscard]] bool has_committed(std::string_view ns, std::string_view key) const;

 private:
  Result<UniqueFd> open_base(bool create) const;
  Result<void> check_lock(const KeyLock& lock) const;
  Result<void> check_lock(std::string_view ns, std::string_view key, const KeyLock& lock) const;
  Result<std::string> child_of_key(const std::string& path, const KeyLock& lock) const;
  void prune(const KeyLock& lock) const;
  Result<std::string> commit_impl(Staging&& staging, Manifest base, const KeyLock& lock,
                                  bool prune_after) const;
  Result<UniqueFd> open_key_dir(std::string_view ns, std::string_view key) const;
  void prune_failed_dumps(const KeyLock& lock, int kept) const;

  std::string base_;
  std::string root_;
  int keep_;
  std::shared_ptr<const Keyring> keys_;
};

}  // namespace arch
