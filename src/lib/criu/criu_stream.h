// CriuStream: one pass from CRIU to the store and back. `criu dump --stream` hands each image
// to ARCH's streamer (criu/image_streamer.h), which encrypts it chunk by chunk into
// `<images>/<name>.arch` (store/image_stream.h) as it arrives: no plaintext image file is
// ever written. `criu restore --stream` reads them back the same way, each chunk verified
// before CRIU sees a byte of it, no decrypted copy on disk.
//
// CRIU runs on its command line (its RPC service refuses --stream: image_streamer.h), so this
// serves process trees ARCH dumps itself (jobs), not runc containers.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "base/error.h"
#include "store/manifest.h"
#include "store/node_key.h"
#include "store/stream_compression.h"

namespace arch {

/// Options both directions share.
struct CriuStreamCommon {
  std::string criu;       ///< The CRIU binary.
  int images_dirfd = -1;  ///< Where the sealed images are (dump: written; restore: read).
  std::string work_dir;   ///< CRIU's work dir (its log).
  std::string log_file;   ///< Log name inside the work dir.
  std::string stream_id;  ///< The checkpoint's stream id (its manifest's "encryption").
  bool shell_job = false;
  bool tcp_established = false;
  bool file_locks = false;
  std::chrono::seconds timeout{600};
};

struct CriuStreamDumpOptions : CriuStreamCommon {
  pid_t pid = 0;
  bool leave_running = false;
  uint64_t ghost_limit = 0;              ///< 0: CRIU's own.
  const NodeKey* key = nullptr;          ///< The key that seals (required).
  StreamCompressionOptions compression;  ///< Each chunk compressed before it is sealed.
};

struct CriuStreamRestoreOptions : CriuStreamCommon {
  const Keyring* keys = nullptr;  ///< Keys that verify (required).
  /// (key, our fd): handed to CRIU as `--inherit-fd` (at most one).
  std::vector<std::pair<std::string, int>> inherit_fds;
};

/// What went through.
struct CriuStreamTotals {
  uint64_t plain_bytes = 0;   ///< Image bytes CRIU wrote or read.
  uint64_t stored_bytes = 0;  ///< Bytes in the store.
  uint64_t images = 0;
  uint64_t chunks = 0;
  uint64_t compressed_chunks = 0;  ///< Chunks stored as zstd frames.
  double criu_ms = 0;
  /// Dump: each sealed file as written ("<name>.arch", stored size, SHA-256), so the commit
  /// need not read it again (store/manifest.h: build_manifest_files).
  std::vector<ManifestFile> files;
};

/// The name a stored image has: "<name>.arch".
std::string stored_image_name(std::string_view image);

/// Dumps the tree rooted at options.pid with `criu dump --stream`, sealing every image into
/// options.images_dirfd. On failure the error carries CRIU's error lines.
Result<CriuStreamTotals> criu_dump_streamed(const CriuStreamDumpOptions& options);

/// Restores with `criu restore --stream --restore-detached --restore-sibling` (the restored
/// root becomes our child) from the sealed images in options.images_dirfd; returns its pid.
/// A chunk that does not verify stops the restore (CRIU sees only verified bytes, and fails).
Result<std::pair<pid_t, CriuStreamTotals>> criu_restore_streamed(
    const CriuStreamRestoreOptions& options);

}  // namespace arch
