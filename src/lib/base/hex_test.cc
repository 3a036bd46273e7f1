// to_hex: every byte value, in order, two lower-case digits each.
#include "base/hex.h"

#include <gtest/gtest.h>

namespace arch {
namespace {

TEST(Hex, EveryByteValueInOrder) {
  std::string all;
  for (int i = 0; i < 256; ++i) all += static_cast<char>(i);
  std::string hex = to_hex(all);
  ASSERT_EQ(hex.size(), 512u);
  EXPECT_EQ(hex.substr(0, 8), "00010203");
  EXPECT_EQ(hex.substr(2 * 0x7f, 6), "7f8081");
  EXPECT_EQ(hex.substr(2 * 0xf8), "f8f9fafbfcfdfeff");
  const unsigned char md[] = {0xde, 0xad, 0xbe, 0xef};
  EXPECT_EQ(to_hex(md, sizeof md), "deadbeef");
  EXPECT_EQ(to_hex(std::string_view{}), "");
}

}  // namespace
}  // namespace arch
