// Tests for the image stream's compression: the level policy against simulated rates, and
// bounded decompression of frames that lie about their size.
#include "store/stream_compression.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <cmath>
#include <functional>
#include <random>

namespace arch {
namespace {

constexpr std::size_t kPlain = 4 << 20;

// Runs `chunks` chunks through `policy` with a compressor of `bps(level)` bytes per second
// and `ratio(level)`; returns the levels chosen (0: raw).
std::vector<int> simulate(LevelPolicy& policy, int chunks, const std::function<double(int)>& bps,
                          const std::function<double(int)>& ratio) {
  std::vector<int> chosen;
  for (int i = 0; i < chunks; ++i) {
    int level = policy.next_level();
    chosen.push_back(level);
    if (level == 0) continue;
    auto compressed = static_cast<std::size_t>(std::lround(ratio(level) * kPlain));
    policy.observe(level, kPlain, compressed, static_cast<double>(kPlain) / bps(level));
  }
  return chosen;
}

int raw_count(const std::vector<int>& levels, std::size_t from) {
  int n = 0;
  for (std::size_t i = from; i < levels.size(); ++i) n += levels[i] == 0 ? 1 : 0;
  return n;
}

// Faster at lower levels, smaller at higher ones (roughly zstd's shape).
double fast_bps(int level) {
  return 2e9 / (level + 6);
}
double good_ratio(int level) {
  return 0.30 - 0.03 * level;
}

TEST(LevelPolicy, SlowStoreAndCompressibleDataClimbToAHigherLevel) {
  LevelPolicy p({.mode = StreamCompression::kAuto, .store_bps = 20e6});
  auto levels = simulate(p, 30, fast_bps, good_ratio);
  EXPECT_EQ(levels.front(), 1);
  EXPECT_EQ(raw_count(levels, 0), 0);
  EXPECT_GT(levels.back(), 1);  // store-bound: ratio pays more than speed
}

TEST(LevelPolicy, FastStoreStaysRawAndProbes) {
  // 5 GB/s store, 500 MB/s compressor or less: compressing costs more than it saves.
  LevelPolicy p({.mode = StreamCompression::kAuto, .store_bps = 5e9});
  auto levels = simulate(
      p, 64, [](int level) { return 5e8 / (level + 6) * 6; }, good_ratio);
  int raw = raw_count(levels, 16);
  EXPECT_GE(raw, 48 - 48 / kProbeEvery - 1);
  EXPECT_LT(raw, 48);  // it keeps probing (the data may change)
}

TEST(LevelPolicy, IncompressibleDataIsStoredRaw) {
  LevelPolicy p({.mode = StreamCompression::kAuto, .store_bps = 100e6});
  auto levels = simulate(p, 40, fast_bps, [](int) { return 1.0; });
  EXPECT_GE(raw_count(levels, 8), 32 - 32 / kProbeEvery - 1);
}

TEST(LevelPolicy, SlowCompressorStepsDownToAFastLevel) {
  // Level 1 at 150 MB/s against a 200 MB/s store is not worth it; zstd's fast levels are.
  LevelPolicy p({.mode = StreamCompression::kAuto, .store_bps = 200e6});
  auto bps = [](int level) { return level <= -1 ? 1.2e9 : 150e6; };
  auto ratio = [](int level) { return level <= -1 ? 0.2 : 0.1; };
  auto levels = simulate(p, 20, bps, ratio);
  EXPECT_LT(levels.back(), 0);
  EXPECT_EQ(raw_count(levels, 5), 0);
}

TEST(LevelPolicy, FixedModesDoNotAdapt) {
  LevelPolicy zstd({.mode = StreamCompression::kZstd});
  LevelPolicy seven({.mode = StreamCompression::kZstd, .level = 7});
  LevelPolicy off({.mode = StreamCompression::kOff});
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(zstd.next_level(), 3);
    zstd.observe(3, kPlain, kPlain, 10);  // dreadful, yet always tried
    EXPECT_EQ(seven.next_level(), 7);
    EXPECT_EQ(off.next_level(), 0);
  }
}

TEST(StreamCompression, ParsesTheSetting) {
  EXPECT_EQ(*parse_stream_compression("auto"), StreamCompression::kAuto);
  EXPECT_EQ(*parse_stream_compression("off"), StreamCompression::kOff);
  EXPECT_EQ(*parse_stream_compression("zstd"), StreamCompression::kZstd);
  EXPECT_FALSE(parse_stream_compression("gzip"));
}

std::string compress(std::string_view plain) {
  auto c = ChunkCompressor::create({.mode = StreamCompression::kZstd, .level = 1});
  EXPECT_TRUE(c && *c);
  std::string frame;
  auto z = (*c)->compress(plain, frame);
  EXPECT_TRUE(z && *z);
  return frame;
}

// Overwrites a frame's declared content size (its header has no checksum).
void set_content_size(std::string& frame, uint32_t size) {
  auto fhd = static_cast<unsigned char>(frame[4]);
  unsigned fcs_flag = fhd >> 6, single_segment = (fhd >> 5) & 1, dict_flag = fhd & 3;
  ASSERT_EQ(fcs_flag, 2u) << "expected a 4-byte content size";
  static constexpr std::size_t kDictBytes[] = {0, 1, 2, 4};
  std::size_t at = 5 + (single_segment != 0 ? 0 : 1) + kDictBytes[dict_flag];
  for (unsigned i = 0; i < 4; ++i) frame[at + i] = static_cast<char>((size >> (8 * i)) & 0xff);
}

TEST(ChunkDecompressor, RoundTripsAndRefusesFramesThatLie) {
  auto d = ChunkDecompressor::create();
  ASSERT_TRUE(d);
  std::string plain(2 << 20, 'x');
  for (std::size_t i = 0; i < plain.size(); i += 4096) plain[i] = static_cast<char>(i >> 12);
  std::string frame = compress(plain), out;
  ASSERT_TRUE((*d)->decompress(frame, plain.size(), 8 << 20, out));
  EXPECT_EQ(out, plain);

  // A frame declaring 1 MiB whose blocks hold 2 MiB (a bomb with a lying header): decoding
  // stops at the 1 MiB buffer.
  std::string bomb = frame;
  set_content_size(bomb, 1 << 20);
  auto r = (*d)->decompress(bomb, 1 << 20, 8 << 20, out);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), EBADMSG);
  EXPECT_TRUE(out.empty());
  // The declared size differs from the authenticated length; over the limit; not a frame;
  // two frames; a truncated frame.
  EXPECT_FALSE((*d)->decompress(frame, 1 << 20, 8 << 20, out));
  EXPECT_FALSE((*d)->decompress(frame, plain.size(), 1 << 20, out));
  EXPECT_FALSE((*d)->decompress("not a zstd frame", plain.size(), 8 << 20, out));
  EXPECT_FALSE((*d)->decompress(frame + frame, plain.size(), 8 << 20, out));
  EXPECT_FALSE((*d)->decompress(std::string_view(frame).substr(0, frame.size() - 3), plain.size(),
                                8 << 20, out));
}

TEST(ChunkCompressor, KeepsRawWhatDoesNotShrink) {
  auto c = ChunkCompressor::create({.mode = StreamCompression::kZstd, .level = 1});
  ASSERT_TRUE(c && *c);
  std::mt19937 gen(1);
  std::string random(1 << 20, '\0');
  for (auto& ch : random) ch = static_cast<char>(gen());
  std::string frame;
  auto z = (*c)->compress(random, frame);
  ASSERT_TRUE(z);
  EXPECT_FALSE(*z);
  EXPECT_EQ((*c)->chunks_compressed(), 0u);
  EXPECT_FALSE(*ChunkCompressor::create({.mode = StreamCompression::kOff}));
}

}  // namespace
}  // namespace arch
