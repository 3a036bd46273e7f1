// JobArchive: a committed job checkpoint as one file, and back. Export writes a pax tar of
// the checkpoint directory, manifest.json first, zstd-compressed by default, to a temp
// file beside the target that is fsynced and renamed into place. Import extracts an
// archive into an empty directory: the first entry must be manifest.json, and after it
// only the directories and regular files that manifest lists, each once and with its
// listed size (no "..", no links, no devices), so an archive never expands beyond its
// manifest (nor the node's caps). The caller then verifies the manifest (digests) before
// anything is restored.
#pragma once

#include <cstdint>
#include <string>

#include "base/error.h"
#include "base/expansion_limit.h"

namespace arch {

struct ExportOptions {
  bool compress = true;  ///< zstd; else a plain tar.
  int level = 1;         ///< zstd level 1-19.
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
                            const ExpansionLimits& caps);
/// Same, with no cap beyond the archive's manifest.
Result<void> import_archive(const std::string& archive_path, const std::string& dest_dir);

}  // namespace arch
