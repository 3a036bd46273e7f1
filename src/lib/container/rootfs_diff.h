// RootfsDiff: a container's writable overlay layer, captured as an OCI-style layer tar and
// applied into a new container's rootfs without ever touching anything outside it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/expansion_limit.h"

namespace arch {

/// What a capture wrote or an apply did, by kind of entry.
struct RootfsDiffStats {
  uint64_t regular = 0;      ///< regular files (with their data)
  uint64_t directories = 0;  ///< directories
  uint64_t symlinks = 0;     ///< symbolic links
  uint64_t hardlinks = 0;    ///< second and later names of an inode
  uint64_t devices = 0;      ///< character and block devices (whiteouts not included)
  uint64_t fifos = 0;        ///< named pipes
  uint64_t deletions = 0;    ///< whiteouts (`.wh.<name>`)
  uint64_t opaque_dirs = 0;  ///< opaque directory markers (`.wh..wh..opq`)
  uint64_t bytes = 0;        ///< file data bytes stored or written (holes excluded)
  uint64_t skipped = 0;      ///< entries left out (sockets, names that look like markers, ...)
  uint64_t entries = 0;      ///< tar entries written or read (every header, markers included)
  /// One line per skipped entry or tolerated failure ("skipped socket run/app.sock").
  std::vector<std::string> warnings;
};

/// The upperdir of the overlay filesystem mounted at `mountpoint`, read from
/// /proc/self/mountinfo (the topmost mount at that path). Fails when nothing is mounted
/// there, when it is not an overlay, or when the overlay has no upper layer.
Result<std::string> overlay_upperdir(const std::string& mountpoint);

/// Puts the overlay mounted at `mountpoint` back to its lower layers alone: unmounts it,
/// empties its upper and work directories, and mounts it again with the same options.
/// (Emptying the upper directory under a live mount leaves the kernel's cached view
/// pointing at deleted files.) Fails with EBUSY when something still uses the mount.
Result<void> reset_overlay(const std::string& mountpoint);

/// Streams the contents of overlay upper layer `upperdir` to `out_fd` as a POSIX pax tar
/// in the OCI image-layer conventions: whiteouts become `.wh.<name>`, opaque directories
/// are followed by `<dir>/.wh..wh..opq`. Keeps file data (holes stay holes), directories,
/// symlinks, hardlinks, devices, fifos, mode, numeric owner, times (ns) and xattrs
/// (except overlay's own trusted.overlay.*). Paths are relative, parents come before
/// children, names sorted. Never follows symlinks. Sockets are skipped with a warning.
/// Fails on metacopy/redirect upper layers, whose data lives partly in the lower layers.
Result<RootfsDiffStats> capture_rootfs_diff(const std::string& upperdir, int out_fd);

/// How capture_rootfs_diff writes its stream.
struct RootfsCaptureOptions {
  int zstd_level = 0;    ///< 1-19: a zstd stream of the tar; 0: the plain tar.
  int zstd_threads = 0;  ///< zstd workers; 0: one per CPU.
  /// A whole directory, not an overlay layer: the stream starts with an opaque marker for
  /// the root, so applying it first empties the target (a snapshot put back, not a diff).
  bool opaque_root = false;
};
/// Same, compressed as `options` say. apply_rootfs_diff() reads either form.
Result<RootfsDiffStats> capture_rootfs_diff(const std::string& upperdir, int out_fd,
                                            const RootfsCaptureOptions& options);

/// Reads a tar made by capture_rootfs_diff (or any OCI layer tar), plain or zstd-compressed
/// (recognised by its magic number), from `in_fd` and applies
/// it into the directory `rootfs`: whiteouts delete, opaque markers empty the directory's
/// existing children, every other entry is created or replaced with its metadata.
/// Nothing outside `rootfs` is ever touched, whatever symlinks the rootfs contains: every
/// parent is resolved with openat2(RESOLVE_IN_ROOT) and the last component is never
/// followed. Entries with absolute paths or ".." components are refused. A truncated or
/// corrupt tar fails, after having applied the entries before the damage.
/// A zstd stream whose frames need a window above kMaxZstdWindow is refused unread.
Result<RootfsDiffStats> apply_rootfs_diff(int in_fd, const std::string& rootfs);

/// Same, stopping with an EFBIG error as soon as the diff writes more file data bytes or
/// holds more entries than `limits` allow (what its checkpoint's capture counted, and the
/// node's caps), or its decompressed stream grows past limits.stream_bytes(). Bytes are
/// counted as they are written, so nothing expands beyond the limit before the refusal.
Result<RootfsDiffStats> apply_rootfs_diff(int in_fd, const std::string& rootfs,
                                          const ExpansionLimits& limits);

}  // namespace arch
