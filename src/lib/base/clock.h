// Clock: the current time and its one UTC text form (RFC 3339), for every record ARCH writes.
#pragma once

#include <string>

namespace arch {

/// `t` (seconds since the epoch) in UTC: RFC 3339 ("2026-11-21T22:36:24Z"), or with
/// `compact` a form for file names ("20261121T223624Z").
std::string format_utc(long t, bool compact = false);

}  // namespace arch
