// Reading protobuf's wire format by hand, as CRIU's image files hold it: varints, the
// little-endian u32 length before each entry, and skipping fields not asked for. Every
// length is checked against what is left, without overflow.
#pragma once

#include <fmt/core.h>

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "base/error.h"

namespace arch {

struct WireReader {
  std::string_view data;
  std::size_t pos = 0;

  [[nodiscard]] bool done() const { return pos >= data.size(); }
  [[nodiscard]] std::size_t left() const { return data.size() - pos; }

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
    if (left() < 4) return fail("truncated");
    uint32_t v = 0;
    for (int i = 3; i >= 0; --i)
      v = (v << 8) | static_cast<uint8_t>(data[pos + static_cast<std::size_t>(i)]);
    pos += 4;
    return v;
  }

  /// Skips one field of wire type `wire` (varint, fixed64, length-delimited, fixed32).
  Result<void> skip(uint64_t wire) {
    uint64_t n = 0;
    if (wire == 0) {
      auto v = varint();
      return v ? Result<void>() : std::unexpected(v.error());
    }
    if (wire == 1) n = 8;
    if (wire == 5) n = 4;
    if (wire == 2) {
      auto len = varint();
      if (!len) return std::unexpected(len.error());
      n = *len;
      if (n == 0) return {};
    }
    if (n == 0) return fail(fmt::format("unsupported wire type {}", wire));
    if (left() < n) return fail("truncated field");
    pos += static_cast<std::size_t>(n);
    return {};
  }
};

}  // namespace arch
