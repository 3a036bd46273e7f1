// Tests for EnumNames: names, accepted spellings, unknown values and text.
#include "base/enum_names.h"

#include <gtest/gtest.h>

namespace arch {
namespace {

enum class Colour { kRed, kGreen, kBlue };
constexpr EnumNames<Colour, 3> kColours{
    {{{Colour::kRed, "red"}, {Colour::kGreen, "green"}, {Colour::kGreen, "verde"}}}};

TEST(EnumNames, NamesAndParsesBothWays) {
  static_assert(kColours.name(Colour::kRed) == "red");
  EXPECT_EQ(kColours.name(Colour::kGreen), "green");  // the first entry is the name
  EXPECT_EQ(kColours.parse("red"), Colour::kRed);
  EXPECT_EQ(kColours.parse("verde"), Colour::kGreen);  // a later entry: accepted spelling
}

TEST(EnumNames, UnknownValuesAndTextAreReported) {
  EXPECT_EQ(kColours.name(Colour::kBlue, "?"), "?");
  EXPECT_EQ(kColours.parse("blue"), std::nullopt);
  EXPECT_EQ(kColours.parse(""), std::nullopt);
  EXPECT_EQ(kColours.parse("RED"), std::nullopt);  // exact, case-sensitive
}

}  // namespace
}  // namespace arch
