// ContainerRegistry: the node's ARCH-enabled containers, recorded by arch-runc at create
// on tmpfs (gone at reboot, like the containers), so archctl finds them whatever engine
// created them. Entries are checked against `runc state` when used.
//
// Layout: <state dir>/containers/<fnv64 of the runc root>/<id>.json, and beside it
// <id>.restored while a restored container waits for the engine's `start`.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/error.h"

namespace arch {

inline constexpr const char* kDefaultStateDir = "/run/arch";

/// How a restored container came back (recorded by arch-runc-helper, read by archd).
struct RestoreInfo {
  std::string checkpoint;  ///< The checkpoint directory restored from.
  double ms = 0;           ///< From the engine's create to runc restore done.
  uint64_t bytes = 0;      ///< Bytes of the checkpoint read (its manifest's files).
};

struct ContainerRecord {
  std::string id;
  std::string ns;         ///< containerd namespace ("default", "moby", "k8s.io" ...).
  std::string key;        ///< Store key: stable across rescheduling (see job_identity.h).
  std::string runc_root;  ///< runc --root the engine uses for it.
  std::string bundle;
  std::string store;                ///< Checkpoint store base for this container.
  std::string log;                  ///< The engine's runc log file for this container, if any.
  long created = 0;                 ///< Seconds since the epoch.
  bool checkpoint_on_stop = false;  ///< ARCH_CHECKPOINT_ON_STOP=1: a SIGTERM checkpoints it.
  std::string key_source{};  ///< Where the key came from: "ARCH_JOB_ID", ..., "container-id".
  std::string workdir{};     ///< Shared mode: the work directory on the host, else empty.
  std::string store_root{};  ///< The allowed root `store` lies under (see store_layout.h).
  std::string owner{};       ///< Whom its checkpoints belong to (see owner.h).
};

/// A short stable name for a runc root (FNV-1a 64, hex): containers of different engines
/// may share an id, never a (runc root, id) pair.
std::string runc_root_hash(std::string_view runc_root);

/// The containerd namespace of a container: from the shim's bundle path
/// (.../io.containerd.runtime.v2.task/<ns>/<id>), else from the runc root
/// (/run/containerd/runc/<ns>, Docker's .../runtime-runc/<ns>), else "default".
std::string derive_namespace(std::string_view bundle, std::string_view runc_root);

class ContainerRegistry {
 public:
  explicit ContainerRegistry(std::string state_dir = kDefaultStateDir)
      : dir_(std::move(state_dir) + "/containers") {}

  Result<void> record(const ContainerRecord& rec) const;
  Result<ContainerRecord> find(const std::string& runc_root, const std::string& id) const;
  /// Every record (unreadable ones skipped).
  std::vector<ContainerRecord> all() const;
  /// Removes the record and its markers (missing is fine).
  void forget(const std::string& runc_root, const std::string& id) const;

  /// The restored marker: set after `runc restore`, consumed by the next `start`.
  Result<void> mark_restored(const std::string& runc_root, const std::string& id) const;
  /// True (and the marker removed) when a restored container was waiting for `start`.
  bool take_restored(const std::string& runc_root, const std::string& id) const;

  /// Records how a container was restored (kept until the container is deleted).
  Result<void> record_restore(const std::string& runc_root, const std::string& id,
                              const RestoreInfo& info) const;
  std::optional<RestoreInfo> find_restore(const std::string& runc_root,
                                          const std::string& id) const;

  [[nodiscard]] std::string path_for(const std::string& runc_root, const std::string& id,
                                     const char* suffix) const;

 private:
  std::string dir_;
};

}  // namespace arch
