// Clock: UTC formatting with gmtime_r/strftime.
#include "base/clock.h"

#include <cinttypes>
#include <cstdio>
#include <ctime>

namespace arch {
namespace {

constexpr int64_t kNanos = 1'000'000'000;

// ".nnn": `n` with a leading dot, zero-padded to `width` digits.
std::string fraction(int width, int64_t n) {
  char buf[24];
  int len = std::snprintf(buf, sizeof buf, ".%0*" PRId64, width, n);
  return std::string(buf, len > 0 ? static_cast<std::size_t>(len) : 0);
}

}  // namespace

std::string format_utc(long t, bool compact) {
  std::time_t secs = t;
  std::tm tm{};
  ::gmtime_r(&secs, &tm);
  char buf[64];
  std::size_t n = compact ? std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm)
                          : std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return std::string(buf, n);
}

std::string format_utc_ns(int64_t ns, UtcPrecision precision, bool compact) {
  int64_t secs = ns / kNanos, frac = ns % kNanos;
  if (frac < 0) {  // before 1970: floor, so that the fraction counts forwards
    secs -= 1;
    frac += kNanos;
  }
  std::string out = format_utc(static_cast<long>(secs), compact);
  out.pop_back();  // the 'Z'
  switch (precision) {
    case UtcPrecision::kSeconds:
      break;
    case UtcPrecision::kMillis:
      out += fraction(3, frac / 1'000'000);
      break;
    case UtcPrecision::kNanos:
      out += fraction(9, frac);
      break;
  }
  out += 'Z';
  return out;
}

long now_seconds() {
  return static_cast<long>(std::time(nullptr));
}

int64_t now_nanoseconds() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t{ts.tv_sec} * kNanos + ts.tv_nsec;
}

}  // namespace arch
