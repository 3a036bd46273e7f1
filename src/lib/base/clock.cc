// Clock: UTC formatting with gmtime_r/strftime.
#include "base/clock.h"

#include <ctime>

namespace arch {

std::string format_utc(long t, bool compact) {
  std::time_t secs = t;
  std::tm tm{};
  ::gmtime_r(&secs, &tm);
  char buf[64];
  std::size_t n = compact ? std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm)
                          : std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return std::string(buf, n);
}

}  // namespace arch
