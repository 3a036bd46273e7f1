// ExpansionLimit: the counting, and a zstd frame walker (RFC 8878 section 3.1: frames,
// skippable frames, 3-byte block headers) that reads only headers, never decompresses.
#include "base/expansion_limit.h"

#include <algorithm>
#include <string>

namespace arch {
namespace {

// Header allowance per entry in a tar stream: a 512-byte header plus pax records
// (long names, xattrs, sparse maps) of ordinary size.
constexpr uint64_t kStreamBytesPerEntry = 64 * 1024;
constexpr uint64_t kStreamSlack = 1 << 20;

constexpr uint32_t kZstdMagic = 0xFD2FB528;
constexpr uint32_t kSkippableMask = 0xFFFFFFF0;
constexpr uint32_t kSkippableMagic = 0x184D2A50;

uint64_t saturating_add(uint64_t a, uint64_t b) {
  return a > kUnlimited - b ? kUnlimited : a + b;
}

uint64_t saturating_mul(uint64_t a, uint64_t b) {
  return a != 0 && b > kUnlimited / a ? kUnlimited : a * b;
}

uint64_t little_endian(std::string_view bytes) {
  uint64_t v = 0;
  for (size_t i = bytes.size(); i-- > 0;) v = (v << 8) | static_cast<unsigned char>(bytes[i]);
  return v;
}

std::unexpected<Error> too_big(std::string what) {
  return std::unexpected(Error(std::move(what), EFBIG));
}

}  // namespace

ExpansionLimits ExpansionLimits::min(const ExpansionLimits& other) const {
  return {std::min(bytes, other.bytes), std::min(entries, other.entries)};
}

uint64_t ExpansionLimits::stream_bytes() const {
  return saturating_add(saturating_add(bytes, saturating_mul(entries, kStreamBytesPerEntry)),
                        kStreamSlack);
}

Result<void> ExpansionBudget::add_entry() {
  if (entries_ >= limits_.entries) {
    return too_big("expands past its limit of " + std::to_string(limits_.entries) + " entries");
  }
  ++entries_;
  return {};
}

Result<void> ExpansionBudget::fits(uint64_t n) const {
  if (n > limits_.bytes - bytes_) {
    return too_big("expands past its limit of " + std::to_string(limits_.bytes) +
                   " bytes of file data");
  }
  return {};
}

Result<void> ExpansionBudget::add_bytes(uint64_t n) {
  if (auto ok = fits(n); !ok) return ok;
  bytes_ += n;
  return {};
}

Result<void> ExpansionBudget::check_stream(uint64_t consumed) const {
  uint64_t allowed = limits_.stream_bytes();
  if (consumed > allowed) {
    return too_big("expands past its limit of " + std::to_string(allowed) + " decompressed bytes");
  }
  return {};
}

bool is_zstd_magic(std::string_view head) {
  return head.size() >= 4 && little_endian(head.substr(0, 4)) == kZstdMagic;
}

Result<void> ZstdWindowCheck::feed(std::string_view bytes) {
  if (failed_) return fail("zstd: stream already refused");
  while (!bytes.empty()) {
    if (skip_ > 0) {
      auto n = static_cast<size_t>(std::min<uint64_t>(skip_, bytes.size()));
      bytes.remove_prefix(n);
      skip_ -= n;
      continue;
    }
    size_t take = std::min(want_ - field_.size(), bytes.size());
    field_.append(bytes.substr(0, take));
    bytes.remove_prefix(take);
    if (field_.size() < want_) continue;
    if (auto r = on_field(); !r) {
      failed_ = true;
      return r;
    }
  }
  return {};
}

// One complete field: decides what comes next (want_, skip_, state_).
Result<void> ZstdWindowCheck::on_field() {
  switch (state_) {
    case State::kMagic: {
      auto magic = static_cast<uint32_t>(little_endian(field_));
      field_.clear();
      if (magic == kZstdMagic) {
        ++frames_;
        state_ = State::kDescriptor;
        want_ = 1;
      } else if ((magic & kSkippableMask) == kSkippableMagic) {
        state_ = State::kSkippableSize;
        want_ = 4;
      } else {
        return fail("zstd: not a zstd frame (magic " + std::to_string(magic) + ")");
      }
      return {};
    }
    case State::kSkippableSize:
      skip_ = little_endian(field_);
      field_.clear();
      state_ = State::kMagic;
      want_ = 4;
      return {};
    case State::kDescriptor: {
      // Frame_Header_Descriptor: FCS flag (2 bits), single segment, unused, reserved,
      // checksum, dictionary id flag (2 bits). The rest of the header follows.
      auto d = static_cast<unsigned char>(field_[0]);
      if ((d & 0x08) != 0) return fail("zstd: reserved bit set in a frame header");
      bool single = (d & 0x20) != 0;
      unsigned fcs_flag = d >> 6;
      size_t fcs = fcs_flag == 0 ? (single ? 1 : 0) : (size_t{1} << fcs_flag);
      size_t did = (d & 3) == 3 ? 4 : (d & 3);
      want_ = 1 + (single ? 0 : 1) + did + fcs;
      state_ = State::kHeader;
      return {};  // field_ keeps the descriptor
    }
    case State::kHeader:
      return on_header();
    case State::kBlockHeader:
      return on_block_header();
    case State::kChecksum:
      field_.clear();
      state_ = State::kMagic;
      want_ = 4;
      return {};
  }
  return fail("zstd: bad state");
}

Result<void> ZstdWindowCheck::on_header() {
  auto d = static_cast<unsigned char>(field_[0]);
  bool single = (d & 0x20) != 0;
  checksum_ = (d & 0x04) != 0;
  size_t did = (d & 3) == 3 ? 4 : (d & 3);
  uint64_t window = 0;
  if (single) {
    std::string_view fcs = std::string_view(field_).substr(1 + did);
    window = little_endian(fcs) + (fcs.size() == 2 ? 256 : 0);
  } else {
    auto w = static_cast<unsigned char>(field_[1]);
    unsigned log = 10 + (w >> 3);
    uint64_t base = uint64_t{1} << log;
    window = base + (base / 8) * (w & 7);
  }
  field_.clear();
  if (window > max_window_) {
    return std::unexpected(Error("zstd: a frame needs a " + std::to_string(window) +
                                     " byte window, more than the " + std::to_string(max_window_) +
                                     " allowed",
                                 EFBIG));
  }
  state_ = State::kBlockHeader;
  want_ = 3;
  return {};
}

// Block_Header: last-block bit, type (raw, RLE, compressed, reserved), 21-bit size.
Result<void> ZstdWindowCheck::on_block_header() {
  uint64_t h = little_endian(field_);
  field_.clear();
  bool last = (h & 1) != 0;
  unsigned type = (h >> 1) & 3;
  uint64_t size = h >> 3;
  if (type == 3) return fail("zstd: reserved block type");
  skip_ = type == 1 ? 1 : size;
  if (!last) {
    want_ = 3;
  } else if (checksum_) {
    state_ = State::kChecksum;
    want_ = 4;
  } else {
    state_ = State::kMagic;
    want_ = 4;
  }
  return {};
}

}  // namespace arch
