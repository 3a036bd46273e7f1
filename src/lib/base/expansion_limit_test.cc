// Tests for ExpansionLimit: the budget's refusals and the zstd frame walker on hand-made
// frames (raw, RLE and skippable), fed whole and byte by byte.
#include "base/expansion_limit.h"

#include <gtest/gtest.h>

#include <string>

namespace arch {
namespace {

std::string le(uint64_t v, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  return out;
}

const std::string kMagic = le(0xFD2FB528, 4);

// A block header: last-block bit, type (0 raw, 1 RLE, 2 compressed, 3 reserved), size.
std::string block(bool last, unsigned type, uint32_t size) {
  return le((uint64_t{size} << 3) | (type << 1) | (last ? 1 : 0), 3);
}

// A single-segment frame (content size in one byte) holding `text` as one raw block,
// with a checksum when asked (the walker does not check its value).
std::string raw_frame(const std::string& text, bool checksum = false) {
  std::string f = kMagic;
  f.push_back(static_cast<char>(0x20 | (checksum ? 0x04 : 0)));
  f.push_back(static_cast<char>(text.size()));
  f += block(true, 0, static_cast<uint32_t>(text.size())) + text;
  if (checksum) f += "SUMS";
  return f;
}

// A frame with a window descriptor (exponent, mantissa) and an RLE block.
std::string window_frame(unsigned exponent, unsigned mantissa) {
  std::string f = kMagic;
  f.push_back('\0');
  f.push_back(static_cast<char>((exponent << 3) | mantissa));
  return f + block(true, 1, 1000) + "z";
}

Result<void> feed_bytewise(ZstdWindowCheck& check, const std::string& data) {
  for (char c : data) {
    if (auto r = check.feed(std::string_view(&c, 1)); !r) return r;
  }
  return {};
}

TEST(ExpansionBudget, RefusesPastEachLimitWithEfbig) {
  ExpansionBudget b({100, 2});
  EXPECT_TRUE(b.add_entry());
  EXPECT_TRUE(b.add_entry());
  auto e = b.add_entry();
  ASSERT_FALSE(e);
  EXPECT_EQ(e.error().code(), EFBIG);
  EXPECT_NE(e.error().message().find("2 entries"), std::string::npos);
  EXPECT_TRUE(b.add_bytes(60));
  EXPECT_TRUE(b.fits(40));
  EXPECT_FALSE(b.fits(41));
  EXPECT_FALSE(b.add_bytes(41));
  EXPECT_EQ(b.bytes(), 60u) << "a refused add counts nothing";
  EXPECT_TRUE(b.add_bytes(40));
  EXPECT_FALSE(b.add_bytes(1));
  EXPECT_TRUE(b.check_stream(b.limits().stream_bytes()));
  EXPECT_FALSE(b.check_stream(b.limits().stream_bytes() + 1));
}

TEST(ExpansionBudget, UnlimitedNeverOverflows) {
  ExpansionLimits none;
  EXPECT_EQ(none.stream_bytes(), kUnlimited);
  ExpansionBudget b(none);
  EXPECT_TRUE(b.add_bytes(kUnlimited - 1));
  EXPECT_TRUE(b.check_stream(kUnlimited));
  ExpansionLimits tight = none.min({10, kUnlimited});
  EXPECT_EQ(tight.bytes, 10u);
  EXPECT_EQ(tight.entries, kUnlimited);
}

TEST(ZstdWindowCheck, AcceptsFramesWhole_AndByteByByte) {
  std::string stream = raw_frame("hello") + raw_frame("world", true);
  // A skippable frame between them, then a frame with an 8 MiB window (log 23).
  stream += le(0x184D2A53, 4) + le(3, 4) + "abc" + window_frame(13, 0);
  ZstdWindowCheck whole;
  EXPECT_TRUE(whole.feed(stream));
  EXPECT_EQ(whole.frames(), 3u);
  ZstdWindowCheck bytewise;
  EXPECT_TRUE(feed_bytewise(bytewise, stream));
  EXPECT_EQ(bytewise.frames(), 3u);
}

TEST(ZstdWindowCheck, RefusesLargeWindowsBeforeTheirBlocks) {
  // Exponent 17: a 2^27 = 128 MiB window; exponent 15 with mantissa 7: 32 MiB + 28 MiB.
  for (auto [exponent, mantissa] : {std::pair{17u, 0u}, std::pair{15u, 7u}, std::pair{31u, 7u}}) {
    ZstdWindowCheck check;
    auto r = check.feed(window_frame(exponent, mantissa).substr(0, 6));
    ASSERT_FALSE(r) << exponent;
    EXPECT_EQ(r.error().code(), EFBIG);
    EXPECT_NE(r.error().message().find("window"), std::string::npos) << r.error().message();
  }
  ZstdWindowCheck exact;  // 2^25 exactly is allowed
  EXPECT_TRUE(exact.feed(window_frame(15, 0)));
}

TEST(ZstdWindowCheck, RefusesSingleSegmentFramesWithHugeContent) {
  std::string f = kMagic;
  f.push_back(static_cast<char>(0xE0));  // single segment, 8-byte content size
  f += le(uint64_t{1} << 32, 8);
  ZstdWindowCheck check;
  auto r = check.feed(f);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), EFBIG);
}

TEST(ZstdWindowCheck, RefusesWhatIsNotZstd) {
  std::string reserved = kMagic + std::string(1, '\x08') + std::string(1, '\x40');
  std::string bad_block = raw_frame("x").substr(0, 6) + block(true, 3, 1);
  std::string trailing = raw_frame("x") + "garbage!";
  for (const std::string& s : {reserved, bad_block, trailing, std::string("not zstd")}) {
    ZstdWindowCheck check;
    EXPECT_FALSE(check.feed(s)) << s;
    EXPECT_FALSE(check.feed("more")) << "stays refused";
  }
  EXPECT_TRUE(is_zstd_magic(kMagic + "x"));
  EXPECT_FALSE(is_zstd_magic(kMagic.substr(0, 3)));
}

}  // namespace
}  // namespace arch
