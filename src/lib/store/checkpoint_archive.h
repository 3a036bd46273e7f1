// CheckpointArchive: a committed checkpoint (a job's or a container's) as one file, and
// back. Export writes a pax tar of the checkpoint directory, manifest.json first, zstd-compressed
// by default, to a temp file beside the target that is fsynced and renamed into place. Import
// extracts an archive into an empty directory: the first entry must be manifest.json, and after it
// only the directories and regular files that manifest lists, each once and with its
// listed size (no "..", no links, no devices), so an archive never expands beyond its
// manifest (nor the node's caps). The caller then verifies the manifest (digests) before
// anything is restored.
// The layout is Podman's and CRI-O's container checkpoint archive (what checkpointctl reads):
// the store's images/ is checkpoint/ in the archive, and export adds, after manifest.json,
// entries derived for other tools (config.dump, spec.dump, deleted.files, network.status,
// stats-dump) that import skips unwritten (each bounded); an archive of the older layout
// (images/) imports too.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "base/error.h"
#include "base/expansion_limit.h"
#include "store/checkpoint_store.h"
#include "store/manifest.h"

namespace arch {

/// Called as an export or import moves data: bytes done so far and the total (the
/// checkpoint's file bytes for an export, the archive's size for an import).
using ByteProgress = std::function<void(uint64_t done, uint64_t total)>;

struct ExportOptions {
  bool compress = true;     ///< zstd; else a plain tar.
  int level = 1;            ///< zstd level 1-19.
  ByteProgress progress{};  ///< Optional: after each block written.
};

/// Writes the checkpoint directory `ckpt_dir` to `archive_path` (atomically, 0600).
/// Returns the archive's size in bytes.
Result<uint64_t> export_checkpoint(const std::string& ckpt_dir, const std::string& archive_path,
                                   const ExportOptions& options);

/// The largest manifest.json import reads (it is held in memory).
inline constexpr uint64_t kMaxArchiveManifestBytes = 16 << 20;

/// Extracts `archive_path` (tar, plain or zstd compressed) into the existing empty
/// directory `dest_dir`. A truncated or corrupted archive fails with a message that says
/// so ("... is damaged"); one that would write more than its manifest lists or `caps`
/// allow, or whose zstd frames need a window above kMaxZstdWindow, fails with EFBIG
/// ("... is refused") before the excess is written. Whatever was extracted stays in
/// dest_dir for the caller to discard.
Result<void> import_archive(const std::string& archive_path, const std::string& dest_dir,
                            const ExpansionLimits& caps, const ByteProgress& progress = {});
/// Same, with no cap beyond the archive's manifest.
Result<void> import_archive(const std::string& archive_path, const std::string& dest_dir);

/// The same from an open archive file (read from offset 0; `name` for messages), so that a
/// caller can read the manifest first and then extract exactly the file it checked.
Result<void> import_archive_fd(int fd, const std::string& name, const std::string& dest_dir,
                               const ExpansionLimits& caps, const ByteProgress& progress = {});

/// The text of the archive's first entry, which must be manifest.json (at most
/// kMaxArchiveManifestBytes), read from offset 0 of `fd` without writing anything: what an
/// import checks (seal, owner) before it creates anything in a store.
Result<std::string> read_archive_manifest(int fd, const std::string& name);

struct ImportedCheckpoint {
  std::string path;   ///< The new committed generation.
  Manifest manifest;  ///< As sealed by the node that exported it.
};

/// An exported checkpoint (`fd`, an archive export_checkpoint wrote) into `store`, as the
/// newest generation of the key its sealed manifest names. Before anything is created in
/// the store, the manifest is read from the archive and its seal checked with the store's
/// keys (the exporting node's key must have been imported: `archctl key import`); its owner
/// and key must be valid names and, when `expect` ("NS/KEY") is given, equal to it. Then
/// the archive is extracted into a staging directory of that key (within its manifest and
/// `caps`), the extracted manifest must be the one checked, every file must match it, and
/// the generation is committed, sealed again with this node's active key.
Result<ImportedCheckpoint> import_checkpoint(const CheckpointStore& store, int fd,
                                             const std::string& name, const ExpansionLimits& caps,
                                             std::string_view expect = {},
                                             const ByteProgress& progress = {});

}  // namespace arch
