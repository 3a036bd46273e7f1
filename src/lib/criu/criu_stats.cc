// CriuStats: a minimal protobuf varint decoder for CRIU's stats-dump image.
#include "criu/criu_stats.h"

#include <array>

#include "base/file_util.h"
#include "criu/proto_wire.h"

namespace arch {
namespace {

constexpr std::array<const char*, 15> kFieldNames = {"",
                                                     "freezing_time_us",
                                                     "frozen_time_us",
                                                     "memdump_time_us",
                                                     "memwrite_time_us",
                                                     "pages_scanned",
                                                     "pages_skipped_parent",
                                                     "pages_written",
                                                     "irmap_resolve_us",
                                                     "pages_lazy",
                                                     "page_pipes",
                                                     "page_pipe_bufs",
                                                     "shpages_scanned",
                                                     "shpages_skipped_parent",
                                                     "shpages_written"};

using Reader = WireReader;

Result<CriuDumpStats> parse_dump_entry(std::string_view msg) {
  CriuDumpStats stats;
  Reader r{msg};
  while (r.pos < msg.size()) {
    auto key = r.varint();
    if (!key) return std::unexpected(key.error());
    uint64_t field = *key >> 3, wire = *key & 7;
    if (wire == 0 && field < kFieldNames.size() && field > 0) {
      auto v = r.varint();
      if (!v) return std::unexpected(v.error());
      stats[kFieldNames[field]] = *v;
    } else if (auto ok = r.skip(wire); !ok) {
      return std::unexpected(ok.error());
    }
  }
  return stats;
}

}  // namespace

Result<CriuDumpStats> parse_criu_dump_stats(std::string_view bytes) {
  Reader r{bytes};
  auto first = r.u32le();
  auto second = r.u32le();
  if (!first || !second) return fail("stats-dump: truncated header");
  if (*second != kCriuStatsMagic) return fail("stats-dump: not a CRIU stats image");
  auto len = r.u32le();
  if (!len || r.pos + *len > bytes.size()) return fail("stats-dump: truncated entry");
  Reader entry{bytes.substr(r.pos, *len)};
  while (entry.pos < entry.data.size()) {
    auto key = entry.varint();
    if (!key) return std::unexpected(key.error().wrap("stats-dump"));
    if ((*key >> 3) == 1 && (*key & 7) == 2) {
      auto n = entry.varint();
      if (!n || entry.pos + *n > entry.data.size()) return fail("stats-dump: truncated dump entry");
      return parse_dump_entry(entry.data.substr(entry.pos, *n));
    }
    if (auto ok = entry.skip(*key & 7); !ok) return std::unexpected(ok.error().wrap("stats-dump"));
  }
  return fail("stats-dump: no dump statistics");
}

Result<CriuDumpStats> read_criu_dump_stats(const std::string& path) {
  auto bytes = read_file(path, 1 << 20);
  if (!bytes) return std::unexpected(bytes.error());
  return parse_criu_dump_stats(*bytes);
}

}  // namespace arch
