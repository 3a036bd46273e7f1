// Tests for Duration: operator-typed durations and RFC 3339 times.
#include "base/duration.h"

#include <gtest/gtest.h>

namespace arch {
namespace {

TEST(Duration, ParsesUnitsAndCombinations) {
  EXPECT_EQ(parse_duration("90s").value().count(), 90);
  EXPECT_EQ(parse_duration("15m").value().count(), 900);
  EXPECT_EQ(parse_duration("36h").value().count(), 36 * 3600);
  EXPECT_EQ(parse_duration("7d").value().count(), 7 * 86400);
  EXPECT_EQ(parse_duration("1h30m").value().count(), 5400);
  EXPECT_EQ(parse_duration("45").value().count(), 45);
  EXPECT_EQ(parse_duration("0s").value().count(), 0);
}

TEST(Duration, RefusesNonsense) {
  for (const char* bad : {"", "h", "10x", "-5m", "1h30", "1.5h", "99999999999999d"}) {
    auto d = parse_duration(bad);
    EXPECT_FALSE(d) << bad;
    if (!d) {
      EXPECT_NE(d.error().message().find("invalid duration"), std::string::npos);
    }
  }
}

TEST(Duration, ParsesUtcTimes) {
  EXPECT_EQ(parse_utc_time("1970-01-01T00:00:10Z").value(), 10);
  EXPECT_EQ(parse_utc_time("2026-11-22T01:02:03.123456Z").value(), 1795309323);
  EXPECT_FALSE(parse_utc_time("2026-11-22 01:02:03"));
  EXPECT_FALSE(parse_utc_time("2026-11-22T01:02:03+01:00"));
}

}  // namespace
}  // namespace arch
