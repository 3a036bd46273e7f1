// JobArchive: a committed job checkpoint as one file, and back. Export writes a pax tar of
// the checkpoint directory (manifest.json included), zstd-compressed by default, to a temp
// file beside the target that is fsynced and renamed into place. Import extracts an
// archive into an empty directory, accepting only relative paths of regular files and
// directories (no "..", no links, no devices), and the caller then verifies the manifest
// before anything is restored.
#pragma once

#include <cstdint>
#include <string>

#include "base/error.h"

namespace arch {

struct ExportOptions {
  bool compress = true;  ///< zstd; else a plain tar.
  int level = 1;         ///< zstd level 1-19.
};

/// Writes the checkpoint directory `ckpt_dir` to `archive_path` (atomically, 0600).
/// Returns the archive's size in bytes.
Result<uint64_t> export_checkpoint(const std::string& ckpt_dir, const std::string& archive_path,
                                   const ExportOptions& options);

/// Extracts `archive_path` (tar, optionally zstd/gzip/xz compressed) into the existing empty
/// directory `dest_dir`. A truncated or corrupted archive fails with a message that says
/// so; whatever was extracted stays in dest_dir for the caller to discard.
Result<void> import_archive(const std::string& archive_path, const std::string& dest_dir);

}  // namespace arch
