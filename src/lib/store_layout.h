// StoreLayout: where a container's checkpoints live, and the cheap "is there one?" check
// that arch-runc makes on the hot path of an ARCH-enabled create (no locks, no hashing;
// the restore path verifies properly under the key's lock).
//
//   <base>/<namespace>/<key>/ckpt-<UTC time>/manifest.json   committed generations
#pragma once

#include <string>

#include "error.h"
#include "names.h"
#include "node_config.h"
#include "oci_spec.h"

namespace arch {

/// The store base for a container: its ARCH_CHECKPOINT_HOST_PATH if set (must be
/// absolute), else the node's [store] path.
Result<std::string> store_base_for(const ArchEnv& env, const NodeConfig& config);

/// True when <base>/<ns>/<key> holds a directory ckpt-* with a manifest.json (not a symlink).
bool has_committed_checkpoint(const std::string& base, const std::string& ns,
                              const std::string& key);

}  // namespace arch
