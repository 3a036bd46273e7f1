// Duration: "1h30m"-style durations and RFC 3339 UTC times.
#include "base/duration.h"

#include <charconv>
#include <cstdio>
#include <ctime>
#include <string>

namespace arch {

Result<std::chrono::seconds> parse_duration(std::string_view text) {
  auto bad = [&](std::string_view why) {
    return fail(ErrorKind::kInvalidInput, "invalid duration \"" + std::string(text) +
                                              "\": " + std::string(why) +
                                              " (examples: 90s, 15m, 36h, 7d, 1h30m)");
  };
  if (text.empty()) return bad("empty");
  long long total = 0;
  std::size_t pos = 0;
  while (pos < text.size()) {
    long long n = 0;
    auto [end, ec] = std::from_chars(text.data() + pos, text.data() + text.size(), n);
    if (ec != std::errc() || n < 0) return bad("expected a number");
    pos = static_cast<std::size_t>(end - text.data());
    long long unit = 1;
    if (pos < text.size()) {
      switch (text[pos]) {
        case 's':
          unit = 1;
          break;
        case 'm':
          unit = 60;
          break;
        case 'h':
          unit = 3600;
          break;
        case 'd':
          unit = 86400;
          break;
        default:
          return bad("unknown unit");
      }
      ++pos;
    } else if (total != 0) {
      return bad("a unit is needed after the first part");
    }
    if (n > (1LL << 40) / unit) return bad("too long");
    total += n * unit;
  }
  return std::chrono::seconds(total);
}

Result<long> parse_utc_time(std::string_view text) {
  std::string s(text);
  std::tm tm{};
  int consumed = 0;
  if (std::sscanf(s.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                  &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &consumed) != 6) {
    return fail(ErrorKind::kInvalidInput, "not an RFC 3339 UTC time: " + s);
  }
  std::string_view rest = text.substr(static_cast<std::size_t>(consumed));
  if (!rest.empty() && rest.front() == '.') {
    rest.remove_prefix(1);
    while (!rest.empty() && rest.front() >= '0' && rest.front() <= '9') rest.remove_prefix(1);
  }
  if (rest != "Z")
    return fail(ErrorKind::kInvalidInput, "not an RFC 3339 UTC time (want a trailing Z): " + s);
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return static_cast<long>(::timegm(&tm));
}

}  // namespace arch
