// Clock: the current time and its one UTC text form (RFC 3339), for every record ARCH writes.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace arch {

/// Digits after the second in a UTC time stamp.
enum class UtcPrecision { kSeconds, kMillis, kNanos };

/// `t` (seconds since the epoch) in UTC: RFC 3339 ("2026-11-21T22:36:24Z"), or with
/// `compact` a form for file names ("20261121T223624Z").
std::string format_utc(long t, bool compact = false);

/// `ns` (nanoseconds since the epoch) in UTC with `precision`: "2026-11-21T22:36:24.123Z",
/// "2026-11-21T22:36:24.123456789Z", or with `compact` "20261121T223624.123456789Z".
std::string format_utc_ns(int64_t ns, UtcPrecision precision, bool compact = false);

/// The wall clock in seconds since the epoch.
long now_seconds();

/// The wall clock in nanoseconds since the epoch.
int64_t now_nanoseconds();

/// Milliseconds of the monotonic clock since `t0`.
inline double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace arch
