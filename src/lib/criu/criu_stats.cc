// CriuStats: a minimal protobuf varint decoder for CRIU's stats-dump image.
#include "criu/criu_stats.h"

#include <array>

#include "base/file_util.h"

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

struct Reader {
  std::string_view data;
  std::size_t pos = 0;

  Result<uint64_t> varint() {
    uint64_t value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos >= data.size()) return fail("truncated varint");
      auto byte = static_cast<uint8_t>(data[pos++]);
      value |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) return value;
    }
    return fail("varint too long");
  }
  Result<uint32_t> u32le() {
    if (pos + 4 > data.size()) return fail("truncated header");
    uint32_t v = 0;
    for (int i = 3; i >= 0; --i)
      v = (v << 8) | static_cast<uint8_t>(data[pos + static_cast<std::size_t>(i)]);
    pos += 4;
    return v;
  }
  // Skips a field of the given wire type.
  Result<void> skip(uint64_t wire) {
    if (wire == 0) {
      auto v = varint();
      if (!v) return std::unexpected(v.error());
      return {};
    }
    std::size_t n = wire == 1 ? 8 : wire == 5 ? 4 : 0;  // fixed64, fixed32
    if (wire == 2) {
      auto len = varint();
      if (!len) return std::unexpected(len.error());
      n = *len;
    } else if (n == 0) {
      return fail("unsupported wire type " + std::to_string(wire));
    }
    if (pos + n > data.size()) return fail("truncated field");
    pos += n;
    return {};
  }
};

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
