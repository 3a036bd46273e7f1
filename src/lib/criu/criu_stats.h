// CriuStats: the dump statistics CRIU writes to `stats-dump` in the images directory.
//
// Format: a CRIU image file: two little-endian u32 magics (the service-image magic, then
// STATS 0x57093306), then one entry: a u32 length and a protobuf StatsEntry, whose field 1
// is a dump_stats_entry: freezing_time=1, frozen_time=2, memdump_time=3, memwrite_time=4
// (microseconds, uint32), pages_scanned=5, pages_skipped_parent=6, pages_written=7
// (uint64), irmap_resolve=8, pages_lazy=9, page_pipes=10, page_pipe_bufs=11,
// shpages_scanned=12, shpages_skipped_parent=13, shpages_written=14. Decoded by hand: a
// few varints do not justify a protobuf dependency.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "base/error.h"

namespace arch {

inline constexpr uint32_t kCriuStatsMagic = 0x57093306;

/// Field name → value for every field present in the dump statistics.
using CriuDumpStats = std::map<std::string, uint64_t>;

Result<CriuDumpStats> parse_criu_dump_stats(std::string_view file_bytes);
Result<CriuDumpStats> read_criu_dump_stats(const std::string& path);

}  // namespace arch
