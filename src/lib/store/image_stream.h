// ImageStream: one CRIU image stored encrypted at rest as a sequence of AEAD chunks, written
// and read in one pass (the store side of `criu --stream`, criu/image_streamer.h).
//
// File format (version 1), all integers little-endian:
//   header  "ARCHIMG1" (8) | alg u8 (1: AES-256-GCM) | flags u8 (0) | reserved u16 (0)
//           | key id (16 ASCII hex: the node key, store/node_key.h) | salt (32 random bytes)
//   chunk*  cipher_len u32 | plain_len u32 | flags u8 (bit 0: final; bit 1: zstd)
//           | ciphertext (cipher_len) | GCM tag (16)
// A chunk without the zstd flag holds its plaintext (plain_len == cipher_len); with it, one
// zstd frame of the plaintext, compressed before it was encrypted (store/stream_compression.h),
// plain_len its length. Both lengths and the flag are authenticated (the AAD below), so the
// reader trusts them only after the chunk verified, and decodes at most plain_len bytes.
// Streams written before compression existed (no chunk flagged) read unchanged.
// Key: HKDF-SHA256(node key secret, salt, "arch-image-stream-v1\0" key id "\0" stream id
// "\0" image name): a fresh key per image file and checkpoint (the salt is random, so no two
// files share a key and the per-key nonce, the chunk index, never repeats).
// Nonce: 4 zero bytes and the chunk index (u64 big-endian).
// AAD of chunk i: the whole header | stream id | "\0" | image name | "\0" | i (u64) | the
// chunk's own 9-byte record header. So a chunk moved to another place, file or checkpoint,
// a changed length or flag, a dropped final chunk (truncation), anything after the final
// chunk, or a wrong key all fail authentication. The stream id is random per checkpoint and
// recorded in its sealed manifest ("encryption"), which also lists every file's SHA-256.
// A chunk holds at most kMaxImageChunkBytes of plaintext (bounds every decompression).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "base/unique_fd.h"
#include "store/node_key.h"
#include "store/stream_compression.h"

namespace arch {

/// Plaintext bytes per chunk written.
inline constexpr std::size_t kImageChunkBytes = 4 << 20;
/// Largest plaintext a reader accepts in one chunk.
inline constexpr std::size_t kMaxImageChunkBytes = 8 << 20;
/// The suffix of a stored image's file name ("pages-1.img" -> "pages-1.img.arch").
inline constexpr std::string_view kImageStreamSuffix = ".arch";
/// The manifest's "encryption" format name of checkpoints whose images are streams.
inline constexpr std::string_view kImageStreamFormat = "arch-image-stream-v1";

/// A new random stream id (32 lower-case hex digits).
Result<std::string> new_stream_id();

/// Counts of one written or read stream.
struct ImageStreamStats {
  uint64_t plain_bytes = 0;   ///< What CRIU wrote / reads.
  uint64_t stored_bytes = 0;  ///< What the file holds.
  uint64_t chunks = 0;
  uint64_t compressed_chunks = 0;  ///< Chunks stored as zstd frames.
  std::string sha256;  ///< Of the stored bytes (lower-case hex), as written (writer only).
};

/// Writes one image as a stream to `fd` (large sequential writes: one per chunk).
/// Move-only; finish() must be called, else the stream has no final chunk (and so never
/// verifies).
class ImageStreamWriter {
 public:
  /// Writes the header; `key` is the node key that seals (store/node_key.h); each chunk is
  /// compressed before it is encrypted as `compression` chooses.
  static Result<ImageStreamWriter> create(int fd, const NodeKey& key, std::string_view stream_id,
                                          std::string_view image_name,
                                          const StreamCompressionOptions& compression = {});
  /// The same, handing the stored bytes to `sink` instead of writing them to an fd (e.g.
  /// large aligned direct writes: criu/page_receiver.h).
  static Result<ImageStreamWriter> create(std::function<Result<void>(std::string_view)> sink,
                                          const NodeKey& key, std::string_view stream_id,
                                          std::string_view image_name,
                                          const StreamCompressionOptions& compression = {});
  ImageStreamWriter(ImageStreamWriter&&) noexcept;
  ImageStreamWriter& operator=(ImageStreamWriter&&) noexcept;
  ~ImageStreamWriter();

  /// Appends plaintext; full chunks are encrypted and written.
  Result<void> write(std::string_view data);
  /// Encrypts and writes what is left as the final chunk.
  Result<ImageStreamStats> finish();
  /// Tests only: seals `payload` as the next chunk with these record fields as given (chunks
  /// this writer would never write, to test the reader's checks on authenticated chunks).
  Result<void> write_record_for_testing(std::string_view payload, uint32_t plain_len, bool zstd,
                                        bool final);

 private:
  struct State;
  static Result<ImageStreamWriter> create_impl(int fd,
                                               std::function<Result<void>(std::string_view)> sink,
                                               const NodeKey& key, std::string_view stream_id,
                                               std::string_view image_name,
                                               const StreamCompressionOptions& compression);
  explicit ImageStreamWriter(std::unique_ptr<State> s);
  std::unique_ptr<State> s_;
};

/// Reads a stream from `fd`, verifying each chunk before handing its plaintext to `sink`;
/// the first chunk that does not verify stops it (error code EBADMSG) with nothing of it
/// handed on. Fails too when the stream ends without its final chunk or goes on after it.
Result<ImageStreamStats> read_image_stream(
    int fd, const Keyring& keys, std::string_view stream_id, std::string_view image_name,
    const std::function<Result<void>(std::string_view plain)>& sink);

/// Random access to one stream's plaintext (a lazy restore's encrypted pages image,
/// criu/pages_at_rest.h). open() checks the header and walks the chunks' record headers
/// (the stream must end with its final chunk, nothing after it); read() decrypts and
/// verifies the chunks that hold the bytes asked for (the last one is kept). Every chunk
/// but the final one must hold kImageChunkBytes of plaintext (what ImageStreamWriter
/// writes), so no unauthenticated length decides where a byte is; a chunk's own lengths are
/// trusted only after it verified. Move-only; not thread-safe.
class ImageStreamReader {
 public:
  static Result<ImageStreamReader> open(UniqueFd fd, const Keyring& keys,
                                        std::string_view stream_id, std::string_view image_name);
  ImageStreamReader(ImageStreamReader&&) noexcept;
  ImageStreamReader& operator=(ImageStreamReader&&) noexcept;
  ~ImageStreamReader();
  /// Plaintext bytes, as the records say (each is checked when its chunk is read).
  [[nodiscard]] uint64_t size() const;
  /// Exactly `len` plaintext bytes at `offset`; EBADMSG when a chunk does not verify,
  /// ERANGE outside the stream.
  Result<std::vector<char>> read(uint64_t offset, std::size_t len);

 private:
  struct State;
  explicit ImageStreamReader(std::unique_ptr<State> s);
  std::unique_ptr<State> s_;
};

}  // namespace arch
