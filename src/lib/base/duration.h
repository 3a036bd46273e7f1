// Duration: the human durations operators type ("90s", "15m", "36h", "7d", "1h30m").
#pragma once

#include <chrono>
#include <string_view>

#include "base/error.h"

namespace arch {

/// Parses one or more <number><unit> parts, unit one of s, m, h, d (a bare number is
/// seconds). Errors name the offending text.
Result<std::chrono::seconds> parse_duration(std::string_view text);

/// Seconds since the epoch of an RFC 3339 UTC time ("2026-11-22T01:02:03Z", fractions
/// allowed); an error for anything else.
Result<long> parse_utc_time(std::string_view text);

}  // namespace arch
