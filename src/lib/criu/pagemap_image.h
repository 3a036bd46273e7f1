// PagemapImage: CRIU's pagemap-<id>.img, the index of a pages-<pages_id>.img: which virtual
// address ranges of a task (or shared memory object) have their contents at which offset.
//
// Format (CRIU's "common" image): two little-endian u32 magics, IMG_COMMON 0x54564319 then
// PAGEMAP 0x56084025; then entries, each a u32 length and a protobuf message. The first is
// pagemap_head {pages_id = 1}; every next one a pagemap_entry {vaddr = 1 (uint64),
// compat_nr_pages = 2 (uint32; the count in CRIU 3.x, 0 since), in_parent = 3 (bool, old
// images), flags = 4 (PE_PARENT 1, PE_LAZY 2, PE_PRESENT 4), nr_pages = 5 (uint64)}. Entries are sorted by address and do not overlap. The contents of every
// PE_PRESENT entry follow one another in the pages image, in entry order; PE_PARENT entries
// live in a parent checkpoint (pre-dump chains, which ARCH does not restore lazily).
// Decoded by hand (a few varints; see criu_stats.h), bounded in every count.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "base/error.h"

namespace arch {

inline constexpr uint32_t kCriuImgCommonMagic = 0x54564319;
inline constexpr uint32_t kCriuPagemapMagic = 0x56084025;
inline constexpr uint64_t kCriuPageSize = 4096;
inline constexpr uint32_t kPeParent = 1;   ///< Pages are in the parent checkpoint.
inline constexpr uint32_t kPeLazy = 2;     ///< Pages may be restored lazily.
inline constexpr uint32_t kPePresent = 4;  ///< Pages are in this checkpoint's pages image.

/// The largest pagemap image read (entries are ~10 bytes: millions of ranges).
inline constexpr std::size_t kMaxPagemapImageBytes = 64 << 20;

/// One range of pages.
struct PagemapRange {
  uint64_t vaddr = 0;
  uint64_t nr_pages = 0;
  uint32_t flags = 0;
  uint64_t offset = 0;  ///< In the pages image (PE_PRESENT ranges only).
  [[nodiscard]] uint64_t end() const { return vaddr + nr_pages * kCriuPageSize; }
  [[nodiscard]] bool present() const { return (flags & kPePresent) != 0; }
  [[nodiscard]] bool lazy() const { return (flags & kPeLazy) != 0; }
};

/// A parsed pagemap image.
struct Pagemap {
  uint32_t pages_id = 0;             ///< Its contents are in pages-<pages_id>.img.
  std::vector<PagemapRange> ranges;  ///< Sorted, not overlapping.
  uint64_t present_bytes = 0;        ///< Bytes its present ranges take in the pages image.
  /// The range holding `vaddr`, or nullptr.
  [[nodiscard]] const PagemapRange* find(uint64_t vaddr) const;
};

/// Parses a pagemap image. Refuses a wrong magic, a truncated or malformed entry, an
/// unaligned address, an empty or overflowing range, unsorted or overlapping ranges, and a
/// range in a parent checkpoint.
Result<Pagemap> parse_pagemap_image(std::string_view bytes);

}  // namespace arch
