// Restore: turning the create of an ARCH-enabled container that has a checkpoint into a
// restore: lock the key → newest verified checkpoint → apply its rootfs diff into the new
// container's rootfs (never leaving it) → runc restore --detach with the caller's create
// arguments → mark the container restored so the engine's `start` is answered.
// A checkpoint that fails is moved aside with the reason, the new rootfs is put back as it
// was, and the generation before it is tried; when none is left the caller starts the
// container fresh or fails the create.
#pragma once

#include <string>
#include <vector>

#include "base/error.h"
#include "base/expansion_limit.h"
#include "config/node_config.h"
#include "managed/container_registry.h"
#include "runtime/runc_command_line.h"
#include "store/manifest.h"

namespace arch {

struct RestoreOutcome {
  std::string checkpoint;  ///< The checkpoint directory restored from.
  double ms = 0;
  uint64_t bytes = 0;        ///< Bytes of the checkpoint (its manifest's files).
  bool lazy = false;         ///< Restored with lazy pages (lazy_pages.h).
  bool lazy_served = false;  ///< ...served by ARCH's page server (lazy_page_server.h).
  std::string lazy_failure;  ///< Why a wanted lazy restore fell back to a plain one.
  /// What became of the network: "own network namespace remade (lo, ...); 2 TCP
  /// connection(s) closed: rescheduled to another node". Empty: nothing to say.
  std::string network;
  /// Shared mode's work directory: "work directory put back as it was at this
  /// checkpoint ..." when a restore rolled it back (workdir_capture.h), else empty.
  std::string workdir;
  /// Newer generations passed over (did not verify, or failed to restore), with reasons.
  std::vector<std::string> skipped{};
};

/// On failure, `*rootfs_clean` (when given) says whether the new rootfs is as the image
/// made it (so the container may start fresh) or could not be put back.
Result<RestoreOutcome> restore_container(const RuncCommandLine& create, const ContainerRecord& rec,
                                         const NodeConfig& config, const std::string& runc,
                                         bool* rootfs_clean = nullptr);

/// The runc restore flags equivalent to a create command line (bundle, pid file, console
/// socket, no-pivot); create-only flags (no-new-keyring, preserve-fds) are dropped.
std::vector<std::string> restore_flags_from_create(const RuncCommandLine& create,
                                                   const std::string& bundle);

/// Refuses (permission) a container whose spec names its own CRIU configuration file
/// (the org.criu.config annotation, which runc passes to CRIU): CRIU runs as root, and its
/// options (ghost limit, action scripts ...) are the node's to choose, not the tenant's.
Result<void> tenant_criu_config(const std::string& bundle);

/// What the checkpoint's rootfs diff may expand to: the bytes and entries its capture
/// recorded in the manifest (extra.rootfs_diff), within the node's [restore] caps.
ExpansionLimits rootfs_diff_limits(const Manifest& m, const NodeConfig& config);

}  // namespace arch
