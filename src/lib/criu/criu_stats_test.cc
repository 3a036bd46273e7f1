// Tests for CriuStats: a stats-dump image built byte by byte as CRIU writes it.
#include "criu/criu_stats.h"

#include <gtest/gtest.h>

namespace arch {
namespace {

std::string varint(uint64_t v) {
  std::string out;
  do {
    uint8_t b = v & 0x7f;
    v >>= 7;
    out += static_cast<char>(v ? (b | 0x80) : b);
  } while (v);
  return out;
}

std::string u32(uint32_t v) {
  std::string out;
  for (int i = 0; i < 4; ++i) out += static_cast<char>((v >> (8 * i)) & 0xff);
  return out;
}

TEST(CriuStats, DecodesTheDumpEntry) {
  std::string dump = varint(1 << 3) + varint(1200) + varint(2 << 3) + varint(35000) +
                     varint(5 << 3) + varint(70000) + varint(7 << 3) + varint(16400);
  std::string entry = varint((1 << 3) | 2) + varint(dump.size()) + dump;
  std::string file =
      u32(0x55105940) + u32(kCriuStatsMagic) + u32(static_cast<uint32_t>(entry.size())) + entry;
  auto stats = parse_criu_dump_stats(file);
  ASSERT_TRUE(stats) << stats.error().message();
  EXPECT_EQ(stats->at("freezing_time_us"), 1200u);
  EXPECT_EQ(stats->at("frozen_time_us"), 35000u);
  EXPECT_EQ(stats->at("pages_scanned"), 70000u);
  EXPECT_EQ(stats->at("pages_written"), 16400u);
  EXPECT_EQ(stats->count("memdump_time_us"), 0u);
}

TEST(CriuStats, RefusesOtherFilesAndTruncation) {
  EXPECT_FALSE(parse_criu_dump_stats("short"));
  EXPECT_FALSE(parse_criu_dump_stats(u32(1) + u32(2) + u32(0)));
  std::string entry = varint((1 << 3) | 2) + varint(50) + "xx";
  EXPECT_FALSE(parse_criu_dump_stats(u32(0x55105940) + u32(kCriuStatsMagic) + u32(100) + entry));
}

}  // namespace
}  // namespace arch
