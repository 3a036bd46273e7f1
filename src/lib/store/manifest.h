// Manifest: the description of one checkpoint (every file with its size and SHA-256, the
// versions and node it came from), written last into a checkpoint and checked on restore.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"

namespace arch {

/// The manifest format this build writes; manifests up to this version are read (but only
/// sealed ones, version 2 and later, are restored: store/seal.h).
inline constexpr int kManifestFormatVersion = 2;
/// The manifest's file name at the top of a checkpoint directory.
inline constexpr const char* kManifestFileName = "manifest.json";

/// The chunk size of the per-chunk digests of a pages image (is_pages_image_path()).
inline constexpr uint64_t kPagesChunkSize = 1 << 20;

/// One regular file of a checkpoint.
struct ManifestFile {
  std::string path;    ///< Relative to the checkpoint directory, '/'-separated.
  uint64_t size = 0;   ///< In bytes.
  std::string sha256;  ///< Lower-case hex.
  bool operator==(const ManifestFile&) const = default;
};

/// A file's contents chunk by chunk, so a lazy restore can check each chunk of a pages
/// image as it serves it (criu/page_server.h).
struct FileChunks {
  uint64_t size = 0;                ///< The chunk size (the last chunk may be shorter).
  std::vector<std::string> sha256;  ///< Lower-case hex, one per chunk.
  bool operator==(const FileChunks&) const = default;
};

/// Whether `path` (relative to a checkpoint) is a CRIU pages image: images/pages-*.img.
bool is_pages_image_path(std::string_view path);

/// The seal over a manifest (store/seal.h): an HMAC with one of the node keys.
struct ManifestSeal {
  std::string alg;     ///< "HMAC-SHA256".
  std::string key_id;  ///< The node key that sealed it (store/node_key.h).
  std::string mac;     ///< Lower-case hex.
  bool operator==(const ManifestSeal&) const = default;
};

/// The security-relevant part of the container's OCI spec (runtime/spec_digest.h).
struct ManifestSpec {
  std::string digest;                         ///< Lower-case hex SHA-256; empty: none recorded.
  std::map<std::string, std::string> fields;  ///< Field name -> its digest.
  bool operator==(const ManifestSpec&) const = default;
};

/// What a checkpoint is: where it came from and what it holds.
struct Manifest {
  int format_version = kManifestFormatVersion;
  std::string ns;            ///< The store namespace (JSON "namespace").
  std::string key;           ///< The store key.
  std::string container_id;  ///< The container that was checkpointed.
  std::string node;          ///< The node it ran on.
  std::string image;         ///< The container's image.
  std::string created;       ///< RFC 3339, UTC.
  struct Versions {
    std::string arch, criu, runc, kernel;
    bool operator==(const Versions&) const = default;
  } versions;
  std::map<std::string, double> timings_ms;  ///< Phase name -> duration.
  std::vector<ManifestFile> files;           ///< Sorted by path.
  nlohmann::json extra;                      ///< Anything else a writer wants kept (or null).
  ManifestSpec spec;                         ///< The container's spec digest (JSON "spec").
  /// How the images are stored (JSON "encryption"): null, plain files; else
  /// stream_encryption() (store/image_stream.h). A reader refuses any other value.
  nlohmann::json encryption;
  ManifestSeal seal;  ///< Empty alg: unsealed (format 1, or not yet sealed).
  /// Listed file → its per-chunk digests (JSON "chunks", only when not empty): the pages
  /// images, written by build_manifest_files().
  std::map<std::string, FileChunks> chunks;
  bool operator==(const Manifest&) const = default;
};

void to_json(nlohmann::json& j, const Manifest& m);
/// Throws nlohmann::json::exception on a wrong type; parse_manifest() is the checked entry.
void from_json(const nlohmann::json& j, Manifest& m);

/// The manifest as pretty-printed JSON text with a trailing newline.
std::string serialize_manifest(const Manifest& m);

/// Parses manifest text: refuses a format version newer than kManifestFormatVersion, a
/// file path that is absolute or climbs ("..") or repeats, and a malformed digest.
/// Refuses an "encryption" other than null or stream_encryption(). Does not check the seal.
Result<Manifest> parse_manifest(std::string_view text);
/// Same, for parsed JSON.
Result<Manifest> parse_manifest_json(const nlohmann::json& j);

/// The "encryption" of a checkpoint whose images are sealed streams with this id.
nlohmann::json stream_encryption(std::string_view stream_id);
/// The stream id of a manifest whose "encryption" is stream_encryption(); empty otherwise.
std::string manifest_stream_id(const Manifest& m);

/// Size and SHA-256 of a file's contents.
struct FileDigest {
  uint64_t size = 0;
  std::string sha256;               ///< Lower-case hex.
  std::vector<std::string> chunks;  ///< Per-chunk SHA-256 (digest_fd with a chunk size).
};

/// Reads `fd` to its end, hashing as it goes (1 MiB at a time). With `chunk_size` (a
/// multiple of 1 MiB), also each chunk's SHA-256 in the same pass (on a second thread).
Result<FileDigest> digest_fd(int fd, uint64_t chunk_size = 0);

/// One entry met by walk_checkpoint_dir().
struct CheckpointEntry {
  int parent_fd;     ///< The directory that holds it.
  std::string name;  ///< Its name in that directory.
  std::string path;  ///< Relative to the walked directory.
  struct stat st;    ///< lstat of the entry.
};

/// Walks the tree under `dirfd` without following symlinks, calling `fn` for each regular
/// file and (after its contents) each directory, in sorted order. Anything else (symlink,
/// device, fifo, socket) is an error naming it: a checkpoint holds only files and
/// directories. The first error from `fn` stops the walk.
Result<void> walk_checkpoint_dir(int dirfd,
                                 const std::function<Result<void>(const CheckpointEntry&)>& fn);

/// Fills `base.files` with every regular file under `dirfd` (sorted, relative paths, sizes,
/// digests), leaving out a top-level manifest.json.
Result<Manifest> build_manifest_files(int dirfd, Manifest base);
/// Same, for the directory at `dir`.
Result<Manifest> build_manifest_files(const std::string& dir, Manifest base);

/// Checks the directory against the manifest: every listed file exists with its size and
/// digest, and nothing else is there but directories and manifest.json. Errors name the
/// file and the mismatch.
Result<void> verify_manifest(int dirfd, const Manifest& m);
/// Same, for the directory at `dir`.
Result<void> verify_manifest(const std::string& dir, const Manifest& m);

/// What verify_manifest() hashes.
enum class VerifyScope {
  kAllFiles,      ///< Every file.
  kDeferChunked,  ///< Files with chunk digests by size only: their chunks are checked when
                  ///< read (a lazy restore's page server); every other file hashed.
};
/// verify_manifest() with a scope.
Result<void> verify_manifest(int dirfd, const Manifest& m, VerifyScope scope);
/// Whether every pages image `m` lists carries chunk digests (and there is at least one).
bool has_chunked_pages(const Manifest& m);

}  // namespace arch
