// StreamCompression: zstd compression of the image stream's chunks before they are encrypted
// (store/image_stream.h), and the choice of its level from the measured rates.
//
// A chunk is worth compressing when writing fewer bytes saves more time than compressing
// them costs. Per plain byte: raw costs 1/S (S: the store's write rate, as kept per store by
// the deadline planner, container/deadline_plan.h), compressed costs 1/C + r/S (C: the
// compressor's measured throughput at a level, multithreaded; r: its measured ratio). This
// is the serial model (compress, then write): the kernel's writeback overlaps some of the
// write with the next chunk's compression, so it never favours compression wrongly.
// LevelPolicy keeps a moving average of C and r per level of a short ladder, takes the level
// with the least estimated cost, explores the next level up while the store dominates the
// cost and the next level down while the compressor does, and stores raw when raw is
// cheapest, probing again every kProbeEvery chunks (the data may change). Every compressed
// chunk is kept only if it is smaller than its plaintext.
//
// Decompression is bounded: a chunk's frame must be exactly one zstd frame declaring exactly
// the chunk's authenticated plaintext length, decoded in one shot into a buffer of that
// length (at most kMaxImageChunkBytes): a frame that would produce more fails without
// anything allocated beyond it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"

namespace arch {

/// [jobs] stream_compression.
enum class StreamCompression { kOff, kAuto, kZstd };

/// "auto" | "off" | "zstd".
Result<StreamCompression> parse_stream_compression(std::string_view text);

/// The store rate assumed while none has been measured (EBS gp3's default throughput).
inline constexpr double kAssumedStoreBps = 125e6;
/// In auto mode, while raw is cheapest, one chunk in this many is compressed to re-measure.
inline constexpr int kProbeEvery = 8;
/// The zstd levels auto mode chooses among (negative: zstd's fast levels).
inline constexpr int kAutoLevels[] = {-4, -1, 1, 3, 6, 9};

/// How the chunks of one stream are compressed.
struct StreamCompressionOptions {
  StreamCompression mode = StreamCompression::kOff;
  int level = 0;         ///< 1-19: fixed (auto and zstd); 0: auto chooses, zstd uses 3.
  double store_bps = 0;  ///< The store's write rate; 0: unknown (kAssumedStoreBps).
  int workers = 0;       ///< zstd worker threads; 0: one per CPU, at most 4.
};

/// Chooses each chunk's level from what earlier chunks measured (see the file comment).
class LevelPolicy {
 public:
  explicit LevelPolicy(const StreamCompressionOptions& options);
  /// The level for the next chunk; 0: store it raw (not compressed).
  int next_level();
  /// What compressing `plain` bytes at `level` gave: `compressed` bytes in `seconds`.
  void observe(int level, std::size_t plain, std::size_t compressed, double seconds);
  /// Estimated seconds per plain byte at the ladder's `index` (<0: raw); <0 when unmeasured.
  [[nodiscard]] double cost(int index) const;

 private:
  struct Measured {
    double seconds_per_byte = 0;  ///< 1 / compressor throughput.
    double ratio = 1;             ///< compressed / plain.
    bool known = false;
  };
  void decide();
  StreamCompression mode_;
  int fixed_level_ = 0;
  double store_bps_;
  std::vector<Measured> levels_;
  int current_ = 2;  ///< Index into kAutoLevels; level 1.
  bool raw_ = false;
  int since_probe_ = 0;
};

/// Compresses chunks for one writer (not thread-safe; zstd's workers are its own threads).
class ChunkCompressor {
 public:
  /// nullptr when options.mode is kOff.
  static Result<std::unique_ptr<ChunkCompressor>> create(const StreamCompressionOptions& options);
  ~ChunkCompressor();
  ChunkCompressor(const ChunkCompressor&) = delete;
  ChunkCompressor& operator=(const ChunkCompressor&) = delete;

  /// Sets `frame` to `plain` compressed (one zstd frame with its content size) and returns
  /// true when the policy chose to compress it and the frame is smaller; else false (store
  /// `plain` raw).
  Result<bool> compress(std::string_view plain, std::string& frame);
  [[nodiscard]] uint64_t chunks_compressed() const { return compressed_; }

 private:
  struct Ctx;
  ChunkCompressor(std::unique_ptr<Ctx> ctx, const StreamCompressionOptions& options);
  std::unique_ptr<Ctx> ctx_;
  LevelPolicy policy_;
  uint64_t compressed_ = 0;
};

/// Decompresses chunks for one reader, bounded (see the file comment).
class ChunkDecompressor {
 public:
  static Result<std::unique_ptr<ChunkDecompressor>> create();
  ~ChunkDecompressor();
  ChunkDecompressor(const ChunkDecompressor&) = delete;
  ChunkDecompressor& operator=(const ChunkDecompressor&) = delete;

  /// Sets `plain` to `frame` decompressed; EBADMSG unless `frame` is exactly one zstd frame
  /// declaring and producing exactly `plain_len` bytes, and plain_len <= `limit`.
  Result<void> decompress(std::string_view frame, std::size_t plain_len, std::size_t limit,
                          std::string& plain);

 private:
  struct Ctx;
  explicit ChunkDecompressor(std::unique_ptr<Ctx> ctx);
  std::unique_ptr<Ctx> ctx_;
};

}  // namespace arch
