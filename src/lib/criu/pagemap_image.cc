// PagemapImage: a bounded hand decoder for CRIU's pagemap images.
#include "criu/pagemap_image.h"

#include <fmt/core.h>

#include <algorithm>
#include <limits>
#include <optional>

#include "criu/proto_wire.h"

namespace arch {
namespace {

using Reader = WireReader;

// The next length-prefixed message of the image.
Result<std::string_view> next_message(Reader& r) {
  auto len = r.u32le();
  if (!len) return std::unexpected(len.error().wrap("entry length"));
  if (r.data.size() - r.pos < *len) return fail("truncated entry");
  std::string_view msg = r.data.substr(r.pos, *len);
  r.pos += *len;
  return msg;
}

Result<uint32_t> parse_head(std::string_view msg) {
  Reader r{msg};
  std::optional<uint64_t> pages_id;
  while (!r.done()) {
    auto key = r.varint();
    if (!key) return std::unexpected(key.error());
    if ((*key >> 3) == 1 && (*key & 7) == 0) {
      auto v = r.varint();
      if (!v) return std::unexpected(v.error());
      pages_id = *v;
    } else if (auto ok = r.skip(*key & 7); !ok) {
      return std::unexpected(ok.error());
    }
  }
  if (!pages_id || *pages_id > std::numeric_limits<uint32_t>::max())
    return fail("head without a valid pages_id");
  return static_cast<uint32_t>(*pages_id);
}

Result<PagemapRange> parse_entry(std::string_view msg) {
  Reader r{msg};
  std::optional<uint64_t> vaddr, compat_nr_pages, nr_pages, flags;
  bool in_parent = false;
  while (!r.done()) {
    auto key = r.varint();
    if (!key) return std::unexpected(key.error());
    uint64_t field = *key >> 3, wire = *key & 7;
    if (wire == 0 && field >= 1 && field <= 5) {
      auto v = r.varint();
      if (!v) return std::unexpected(v.error());
      if (field == 1) vaddr = *v;
      if (field == 2) compat_nr_pages = *v;
      if (field == 3) in_parent = *v != 0;
      if (field == 4) flags = *v;
      if (field == 5) nr_pages = *v;
    } else if (auto ok = r.skip(wire); !ok) {
      return std::unexpected(ok.error());
    }
  }
  // CRIU 3.x wrote the count in field 2 (u32); newer CRIU writes it in field 5 (u64) and
  // leaves field 2 (now compat_nr_pages) 0.
  if (!nr_pages) nr_pages = compat_nr_pages;
  if (!vaddr || !nr_pages) return fail("entry without vaddr or nr_pages");
  PagemapRange range;
  range.vaddr = *vaddr;
  range.nr_pages = *nr_pages;
  // As CRIU reads images of older versions: no flags means present, in_parent means parent.
  range.flags = flags ? static_cast<uint32_t>(*flags) : (in_parent ? kPeParent : kPePresent);
  if (in_parent) range.flags |= kPeParent;
  return range;
}

}  // namespace

const PagemapRange* Pagemap::find(uint64_t vaddr) const {
  auto it = std::upper_bound(ranges.begin(), ranges.end(), vaddr,
                             [](uint64_t v, const PagemapRange& r) { return v < r.vaddr; });
  if (it == ranges.begin()) return nullptr;
  --it;
  return vaddr < it->end() ? &*it : nullptr;
}

Result<Pagemap> parse_pagemap_image(std::string_view bytes) {
  auto bad = [](const std::string& why) { return fail("pagemap image: " + why); };
  if (bytes.size() > kMaxPagemapImageBytes) return bad("too large");
  Reader r{bytes};
  auto common = r.u32le();
  auto magic = common ? r.u32le() : common;
  if (!magic || *common != kCriuImgCommonMagic || *magic != kCriuPagemapMagic)
    return bad("not a pagemap image (wrong magic)");
  auto head_msg = next_message(r);
  if (!head_msg) return bad(head_msg.error().message());
  auto head = parse_head(*head_msg);
  if (!head) return bad(head.error().message());
  Pagemap out;
  out.pages_id = *head;
  constexpr uint64_t kMaxPages = (uint64_t{1} << 52) / kCriuPageSize;  // beyond any user space
  while (!r.done()) {
    auto msg = next_message(r);
    if (!msg) return bad(msg.error().message());
    auto range = parse_entry(*msg);
    if (!range) return bad(range.error().message());
    if (range->vaddr % kCriuPageSize != 0)
      return bad(fmt::format("unaligned vaddr {:#x}", range->vaddr));
    if (range->nr_pages == 0 || range->nr_pages > kMaxPages || range->vaddr > (uint64_t{1} << 57))
      return bad(fmt::format("bad range {:#x}+{} pages", range->vaddr, range->nr_pages));
    if (!out.ranges.empty() && range->vaddr < out.ranges.back().end())
      return bad(fmt::format("range {:#x} unsorted or overlapping", range->vaddr));
    if ((range->flags & kPeParent) != 0 && !range->present())
      return bad(fmt::format("range {:#x} is in a parent checkpoint", range->vaddr));
    if (range->present()) {
      range->offset = out.present_bytes;
      out.present_bytes += range->nr_pages * kCriuPageSize;
    }
    out.ranges.push_back(*range);
  }
  return out;
}

}  // namespace arch
