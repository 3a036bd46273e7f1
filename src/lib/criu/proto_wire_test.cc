// WireReader: a length-delimited field claiming more than is left (up to 2^64-1, which an
// unchecked `pos + n` would wrap) is refused; varints and skips move exactly.
#include "criu/proto_wire.h"

#include <gtest/gtest.h>

#include <string>

namespace arch {
namespace {

TEST(WireReader, AHugeLengthIsRefusedNotWrapped) {
  std::string huge = "\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01";  // 2^64 - 1
  WireReader r{huge};
  EXPECT_FALSE(r.skip(2));
  EXPECT_LE(r.pos, huge.size());
}

TEST(WireReader, VarintsAndSkipsMoveExactly) {
  std::string data = std::string("\xac\x02", 2) +
                     std::string(
                         "\x03"
                         "abc",
                         4) +
                     "\x01\x02\x03\x04";
  WireReader r{data};
  auto v = r.varint();
  ASSERT_TRUE(v);
  EXPECT_EQ(*v, 300u);
  ASSERT_TRUE(r.skip(2));
  auto u = r.u32le();
  ASSERT_TRUE(u);
  EXPECT_EQ(*u, 0x04030201u);
  EXPECT_TRUE(r.done());
  EXPECT_FALSE(r.u32le());
  EXPECT_FALSE(r.skip(3));
}

}  // namespace
}  // namespace arch
