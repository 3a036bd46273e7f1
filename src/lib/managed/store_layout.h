// StoreLayout: where a container's checkpoints live, and the cheap "is there one?" check
// that arch-runc makes on the hot path of an ARCH-enabled create (no locks, no hashing;
// the restore path verifies properly under the key's lock).
//
//   <base>/<namespace>/<key>/ckpt-<UTC time>/manifest.json   committed generations
#pragma once

#include <optional>
#include <string>

#include "base/error.h"
#include "base/names.h"
#include "config/node_config.h"
#include "runtime/oci_spec.h"

namespace arch {

/// The store base for a container. Shared mode (ARCH_SHAREDFS_HOST_PATH=/mnt/shared) wins:
/// `/mnt/shared/checkpoint`; else its ARCH_CHECKPOINT_HOST_PATH; else the node's [store]
/// path. Host paths must be absolute and free of "..".
Result<std::string> store_base_for(const ArchEnv& env, const NodeConfig& config);

/// Shared mode's work directory: where it lives on the host and where the container sees it.
struct SharedWorkdir {
  std::string shared;     ///< ARCH_SHAREDFS_HOST_PATH, normalised (must exist).
  std::string host;       ///< <ARCH_SHAREDFS_HOST_PATH>/work/<ns>/<key>
  std::string container;  ///< ARCH_WORKDIR_CONTAINER_PATH, absolute, normalised.
};

/// The work directory of a container in shared mode with ARCH_WORKDIR_CONTAINER_PATH set;
/// std::nullopt when it has none. Errors for a relative or ".."-bearing path.
Result<std::optional<SharedWorkdir>> shared_workdir_for(const ArchEnv& env, const std::string& ns,
                                                        const std::string& key);

/// True when <base>/<ns>/<key> holds a directory ckpt-* with a manifest.json (not a symlink).
bool has_committed_checkpoint(const std::string& base, const std::string& ns,
                              const std::string& key);

}  // namespace arch
