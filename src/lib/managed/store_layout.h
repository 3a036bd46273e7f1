// StoreLayout: where a container's checkpoints live, and the cheap "is there one?" check
// that arch-runc makes on the hot path of an ARCH-enabled create (no locks, no hashing;
// the restore path verifies properly under the key's lock).
//
//   <base>/<owner>/<key>/ckpt-<UTC time>/manifest.json   committed generations
//
// The node decides where root writes: every base lies under an allowed root (the node's
// [store] path, "local", or one of its [roots]); the container's ARCH_* variables only
// choose among them. The root is the trust anchor for every later walk (see base/beneath.h).
#pragma once

#include <optional>
#include <string>

#include "base/error.h"
#include "base/names.h"
#include "config/node_config.h"
#include "runtime/oci_spec.h"

namespace arch {

/// Where a container's checkpoints go.
struct StorePlace {
  std::string root;       ///< The allowed root the base lies under (path).
  std::string root_name;  ///< Its name ("local" or a [roots] key).
  std::string base;       ///< Checkpoints in <base>/<owner>/<key>.
  std::string shared;     ///< Shared mode's directory (holds checkpoint/ and work/), else "".
};

/// The container's store, chosen by its ARCH_* variables among the node's allowed roots:
///   ARCH_SHAREDFS=<root name> or ARCH_SHAREDFS_HOST_PATH=<dir>: shared mode, base
///   <dir>/checkpoint; else ARCH_STORE=<root name> or ARCH_CHECKPOINT_HOST_PATH=<dir>: base <dir>;
///   else the node's [store] path.
/// A host path must be absolute, free of "." and "..", and an allowed root or under one
/// (the most specific root is chosen). Not allowed: an error of kind kPermission, naming the
/// allowed roots (the node's [store] on_disallowed decides what the create does).
Result<StorePlace> store_place_for(const ArchEnv& env, const NodeConfig& config);

/// Checks what exists of the path from the place's root down to its base: the root and
/// every existing directory owned by root, not writable by group or others, none a
/// symlink (missing ones are fine: ARCH creates them 0700 later). Errors are of kind kPermission.
Result<void> check_store_place(const StorePlace& place);

/// Shared mode's work directory: where it lives on the host and where the container sees it.
struct SharedWorkdir {
  std::string root;       ///< The allowed root holding `shared` (trust anchor for the walk).
  std::string shared;     ///< The shared directory, normalised (must exist).
  std::string host;       ///< <shared>/work/<owner>/<key>
  std::string container;  ///< ARCH_WORKDIR_CONTAINER_PATH, absolute, normalised.
  std::string mount;      ///< Root-only bind of `host` that runc mounts (see shared_mode.h).
};

/// The work directory of a container in shared mode with ARCH_WORKDIR_CONTAINER_PATH set;
/// std::nullopt when it has none. Errors for a relative or ".."-bearing path.
Result<std::optional<SharedWorkdir>> shared_workdir_for(const StorePlace& place, const ArchEnv& env,
                                                        const std::string& owner,
                                                        const std::string& key);

/// True when <base>/<owner>/<key> holds a directory ckpt-* with a manifest.json, every
/// directory reached from `root` without following a symlink.
bool has_committed_checkpoint(const std::string& root, const std::string& base,
                              const std::string& owner, const std::string& key);

/// `path` relative to `root` ("" when equal); `path` must be under `root`.
std::string relative_to_root(const std::string& path, const std::string& root);

}  // namespace arch
