// Tests for the one UTC text form: seconds, milliseconds, nanoseconds, compact file names.
#include "base/clock.h"

#include <gtest/gtest.h>

namespace arch {
namespace {

constexpr long kT = 1763764584;  // 2025-11-21T22:36:24Z

TEST(Clock, FormatsSecondsAsRfc3339AndCompact) {
  EXPECT_EQ(format_utc(kT), "2025-11-21T22:36:24Z");
  EXPECT_EQ(format_utc(kT, true), "20251121T223624Z");
  EXPECT_EQ(format_utc(0), "1970-01-01T00:00:00Z");
}

TEST(Clock, FormatsSubSecondPrecisions) {
  int64_t ns = int64_t{kT} * 1'000'000'000 + 7'654'321;
  EXPECT_EQ(format_utc_ns(ns, UtcPrecision::kSeconds), "2025-11-21T22:36:24Z");
  EXPECT_EQ(format_utc_ns(ns, UtcPrecision::kMillis), "2025-11-21T22:36:24.007Z");
  EXPECT_EQ(format_utc_ns(ns, UtcPrecision::kNanos), "2025-11-21T22:36:24.007654321Z");
  // The checkpoint directory names on disk: yyyymmddThhmmss.nnnnnnnnnZ.
  EXPECT_EQ(format_utc_ns(ns, UtcPrecision::kNanos, true), "20251121T223624.007654321Z");
}

TEST(Clock, ANegativeTimeCountsTheFractionForwards) {
  EXPECT_EQ(format_utc_ns(-1, UtcPrecision::kNanos), "1969-12-31T23:59:59.999999999Z");
}

TEST(Clock, NowIsConsistentInBothUnits) {
  int64_t ns = now_nanoseconds();
  long s = now_seconds();
  EXPECT_LE(ns / 1'000'000'000 - 1, s);
  EXPECT_GE(ns / 1'000'000'000 + 1, s);
}

}  // namespace
}  // namespace arch
