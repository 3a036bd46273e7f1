// ExpansionLimit: how far an untrusted archive may expand when it is unpacked (file data
// bytes written, entries read, decompressed stream bytes), and a watcher of zstd frame
// headers that refuses decompression windows larger than ARCH ever writes.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

#include "base/error.h"

namespace arch {

inline constexpr uint64_t kUnlimited = std::numeric_limits<uint64_t>::max();

/// What an unpacked archive may add up to; kUnlimited where nothing is known.
struct ExpansionLimits {
  uint64_t bytes = kUnlimited;    ///< File data bytes written (holes excluded).
  uint64_t entries = kUnlimited;  ///< Archive entries read (headers).
  /// The tighter of the two, field by field.
  [[nodiscard]] ExpansionLimits min(const ExpansionLimits& other) const;
  /// Decompressed stream bytes allowed: the data plus a header allowance per entry.
  [[nodiscard]] uint64_t stream_bytes() const;
};

/// Counts what an unpacking did against its limits. Every refusal carries EFBIG and says
/// which limit was passed.
class ExpansionBudget {
 public:
  explicit ExpansionBudget(ExpansionLimits limits) : limits_(limits) {}
  /// One more entry.
  Result<void> add_entry();
  /// Would `n` more data bytes fit? (Checked before writing a declared size.)
  [[nodiscard]] Result<void> fits(uint64_t n) const;
  /// `n` more data bytes written.
  Result<void> add_bytes(uint64_t n);
  /// The decompressed stream has reached `consumed` bytes.
  [[nodiscard]] Result<void> check_stream(uint64_t consumed) const;
  [[nodiscard]] uint64_t bytes() const { return bytes_; }
  [[nodiscard]] uint64_t entries() const { return entries_; }
  [[nodiscard]] const ExpansionLimits& limits() const { return limits_; }

 private:
  ExpansionLimits limits_;
  uint64_t bytes_ = 0;
  uint64_t entries_ = 0;
};

/// The largest zstd window accepted (32 MiB, window log 25): zstd levels 1-19 use at most
/// 8 MiB, so this only refuses streams ARCH did not write, before they allocate.
inline constexpr uint64_t kMaxZstdWindow = uint64_t{1} << 25;

/// True when `head` starts with the zstd frame magic number.
bool is_zstd_magic(std::string_view head);

/// Walks the frame structure of a zstd stream as its compressed bytes go by (frame
/// headers, block headers, skippable frames) and fails on a frame whose window (or, for a
/// single-segment frame, content size) exceeds `max_window`, on reserved bits or block
/// types, and on anything that is not a zstd frame. It does not decompress.
class ZstdWindowCheck {
 public:
  explicit ZstdWindowCheck(uint64_t max_window = kMaxZstdWindow) : max_window_(max_window) {}
  /// The next bytes of the stream.
  Result<void> feed(std::string_view bytes);
  /// Frames started so far.
  [[nodiscard]] uint64_t frames() const { return frames_; }

 private:
  enum class State { kMagic, kSkippableSize, kDescriptor, kHeader, kBlockHeader, kChecksum };
  Result<void> on_field();
  Result<void> on_header();
  Result<void> on_block_header();

  uint64_t max_window_;
  State state_ = State::kMagic;
  std::string field_;      // bytes of the field being collected
  size_t want_ = 4;        // its length
  uint64_t skip_ = 0;      // payload bytes to pass over before the next field
  bool checksum_ = false;  // the current frame ends with a 4-byte checksum
  uint64_t frames_ = 0;
  bool failed_ = false;
};

}  // namespace arch
