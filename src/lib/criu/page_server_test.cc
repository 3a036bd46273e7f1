// Tests of the pagemap decoder and of the page server against constructed images and
// requests: pages served bit for bit, every refusal (flipped byte, outside the pagemap,
// oversized, unknown command) ends the session with nothing sent.
#include "criu/page_server.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <tuple>

#include "base/file_util.h"
#include "base/hex.h"
#include "base/temp_dir.h"
#include "criu/pagemap_image.h"

namespace arch {
namespace {

std::string varint(uint64_t v) {
  std::string out;
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  out += static_cast<char>(v);
  return out;
}
std::string field(int number, uint64_t v) {
  return varint(static_cast<uint64_t>(number) << 3) + varint(v);
}
std::string u32le(uint32_t v) {
  std::string out(4, '\0');
  std::memcpy(out.data(), &v, 4);
  return out;
}
std::string message(const std::string& m) {
  return u32le(static_cast<uint32_t>(m.size())) + m;
}

using Range = std::tuple<uint64_t, uint64_t, uint32_t>;  // vaddr, nr_pages, flags

std::string pagemap_image(uint32_t pages_id, const std::vector<Range>& ranges) {
  std::string out = u32le(kCriuImgCommonMagic) + u32le(kCriuPagemapMagic);
  out += message(field(1, pages_id));
  for (const auto& [vaddr, nr, flags] : ranges) {
    out += message(field(1, vaddr) + field(2, nr) + field(4, flags));
  }
  return out;
}

constexpr uint32_t kLazy = kPePresent | kPeLazy;

TEST(PagemapImage, ParsesRangesAndTheirOffsets) {
  auto m = parse_pagemap_image(
      pagemap_image(7, {{0x1000, 2, kPePresent}, {0x10000, 3, kLazy}, {0x20000, 1, kLazy}}));
  ASSERT_TRUE(m) << m.error().message();
  EXPECT_EQ(m->pages_id, 7u);
  ASSERT_EQ(m->ranges.size(), 3u);
  EXPECT_EQ(m->ranges[1].offset, 2 * kCriuPageSize);
  EXPECT_EQ(m->ranges[2].offset, 5 * kCriuPageSize);
  EXPECT_EQ(m->present_bytes, 6 * kCriuPageSize);
  EXPECT_EQ(m->find(0x12fff), &m->ranges[1]);
  EXPECT_EQ(m->find(0x13000), nullptr);
  EXPECT_EQ(m->find(0x0fff), nullptr);
}

TEST(PagemapImage, OldEntriesWithoutFlagsArePresent) {
  std::string img = u32le(kCriuImgCommonMagic) + u32le(kCriuPagemapMagic) + message(field(1, 1)) +
                    message(field(1, 0x4000) + field(2, 1));
  auto m = parse_pagemap_image(img);
  ASSERT_TRUE(m) << m.error().message();
  EXPECT_TRUE(m->ranges[0].present());
}

TEST(PagemapImage, TakesTheCountFromField5WhenPresent) {
  // What CRIU 4 writes: compat_nr_pages 0, nr_pages in field 5.
  std::string img = u32le(kCriuImgCommonMagic) + u32le(kCriuPagemapMagic) + message(field(1, 1)) +
                    message(field(1, 0x4000) + field(2, 0) + field(4, kLazy) + field(5, 3));
  auto m = parse_pagemap_image(img);
  ASSERT_TRUE(m) << m.error().message();
  EXPECT_EQ(m->ranges[0].nr_pages, 3u);
}

TEST(PagemapImage, RefusesMalformedImages) {
  EXPECT_FALSE(parse_pagemap_image("short"));
  std::string wrong_magic = pagemap_image(1, {{0x1000, 1, kLazy}});
  wrong_magic[4] ^= 1;
  EXPECT_FALSE(parse_pagemap_image(wrong_magic));
  std::string truncated = pagemap_image(1, {{0x1000, 1, kLazy}});
  truncated.pop_back();
  EXPECT_FALSE(parse_pagemap_image(truncated));
  EXPECT_FALSE(parse_pagemap_image(pagemap_image(1, {{0x1001, 1, kLazy}})));  // unaligned
  EXPECT_FALSE(parse_pagemap_image(pagemap_image(1, {{0x1000, 0, kLazy}})));  // empty
  EXPECT_FALSE(parse_pagemap_image(
      pagemap_image(1, {{0x1000, 2, kLazy}, {0x2000, 1, kLazy}})));  // overlapping
  EXPECT_FALSE(
      parse_pagemap_image(pagemap_image(1, {{0x5000, 1, kLazy}, {0x1000, 1, kLazy}})));  // unsorted
  EXPECT_FALSE(parse_pagemap_image(pagemap_image(1, {{0x1000, 1, kPeParent}})));
  EXPECT_FALSE(parse_pagemap_image(pagemap_image(1, {{0x1000, uint64_t{1} << 50, kLazy}})));
}

std::string sha256_hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  return to_hex(md, len);
}

// Page i of the pages image holds byte (i * 7 + offset-in-page) % 251: any misplaced page
// or byte shows.
std::string pages_bytes(uint64_t pages) {
  std::string out(pages * kCriuPageSize, '\0');
  for (std::size_t i = 0; i < out.size(); ++i)
    out[i] = static_cast<char>((i / kCriuPageSize * 7 + i % kCriuPageSize) % 251);
  return out;
}

constexpr uint64_t kChunk = 2 * kCriuPageSize;  // small chunks: requests cross them
constexpr uint64_t kPid = 42;

// Task 42: one non-lazy page, then 3 lazy pages at 0x10000, 1 lazy page at 0x20000, and a
// 4-page lazy range at 0x40000: 9 pages in pages-5.img.
struct Fixture {
  TempDir dir{"arch-pagesrv-"};
  std::string pages = pages_bytes(9);
  int client = -1, server_sk = -1;

  Fixture() {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
      throw std::runtime_error("socketpair");
    client = sv[0];
    server_sk = sv[1];
  }
  ~Fixture() {
    ::close(client);
    ::close(server_sk);
  }
  void write_pages(const std::string& bytes) const {
    auto fd = open_file(dir / "pages-5.img", O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ASSERT_TRUE(fd);
    ASSERT_TRUE(write_all(fd->get(), bytes));
  }
  PageServer server() const {
    std::vector<std::string> digests;
    for (uint64_t off = 0; off < pages.size(); off += kChunk)
      digests.push_back(sha256_hex(std::string_view(pages).substr(off, kChunk)));
    auto fd = open_file(dir / "pages-5.img", O_RDONLY);
    EXPECT_TRUE(fd);
    auto file =
        VerifiedPagesFile::make(std::move(*fd), "pages-5.img", pages.size(), kChunk, digests);
    EXPECT_TRUE(file) << file.error().message();
    auto map = parse_pagemap_image(pagemap_image(
        5,
        {{0x1000, 1, kPePresent}, {0x10000, 3, kLazy}, {0x20000, 1, kLazy}, {0x40000, 4, kLazy}}));
    EXPECT_TRUE(map);
    std::map<uint64_t, Pagemap> maps;
    maps.emplace(kPid, std::move(*map));
    std::map<uint32_t, VerifiedPagesFile> files;
    files.emplace(5u, std::move(*file));
    return PageServer(std::move(maps), std::move(files));
  }
  void send(const PageServerIov& iov) const {
    auto raw = encode_page_server_iov(iov);
    ASSERT_EQ(::send(client, raw.data(), raw.size(), 0), static_cast<ssize_t>(raw.size()));
  }
  // The answer header and its pages.
  std::pair<PageServerIov, std::string> answer() const {
    std::array<char, kPageServerIovSize> raw{};
    EXPECT_EQ(::recv(client, raw.data(), raw.size(), MSG_WAITALL),
              static_cast<ssize_t>(raw.size()));
    auto head = decode_page_server_iov(raw);
    std::string data(head.nr_pages * kCriuPageSize, '\0');
    if (!data.empty()) {
      EXPECT_EQ(::recv(client, data.data(), data.size(), MSG_WAITALL),
                static_cast<ssize_t>(data.size()));
    }
    return {head, data};
  }
  [[nodiscard]] bool nothing_sent() const {
    char c;
    return ::recv(client, &c, 1, MSG_DONTWAIT) < 0 && errno == EAGAIN;
  }
};

TEST(PageServer, ServesLazyPagesBitForBit) {
  Fixture f;
  f.write_pages(f.pages);
  auto server = f.server();
  // 2 pages from the middle of the 3-page range (offset 2 pages: crosses a chunk).
  f.send({kPsIovGet, 2, 0x11000, kPid});
  auto more = server.serve_one(f.server_sk);
  ASSERT_TRUE(more) << more.error().message();
  EXPECT_TRUE(*more);
  auto [head, data] = f.answer();
  EXPECT_EQ(head.cmd, kPsIovAddF | (kPePresent << 16));
  EXPECT_EQ(head.nr_pages, 2u);
  EXPECT_EQ(head.vaddr, 0x11000u);
  EXPECT_EQ(head.dst_id, kPid);
  EXPECT_EQ(data, f.pages.substr(2 * kCriuPageSize, 2 * kCriuPageSize));
  // More than the range holds: cut at its end (the daemon asks again for the rest).
  f.send({kPsIovGet, 100, 0x40000, kPid});
  ASSERT_TRUE(server.serve_one(f.server_sk));
  auto [head2, data2] = f.answer();
  EXPECT_EQ(head2.nr_pages, 4u);
  EXPECT_EQ(data2, f.pages.substr(5 * kCriuPageSize, 4 * kCriuPageSize));
  // The daemon closes: answered with status 0, the session ends.
  f.send({kPsIovFlushNClose, 0, 0, 0});
  more = server.serve_one(f.server_sk);
  ASSERT_TRUE(more);
  EXPECT_FALSE(*more);
  int32_t status = -1;
  EXPECT_EQ(::recv(f.client, &status, sizeof(status), MSG_WAITALL), 4);
  EXPECT_EQ(status, 0);
  EXPECT_TRUE(server.stats().closed_by_command);
  EXPECT_EQ(server.stats().pages_served, 6u);
}

TEST(PageServer, HangUpBetweenRequestsEndsTheSession) {
  Fixture f;
  f.write_pages(f.pages);
  auto server = f.server();
  ::shutdown(f.client, SHUT_WR);
  auto more = server.serve_one(f.server_sk);
  ASSERT_TRUE(more);
  EXPECT_FALSE(*more);
}

// Attack: a byte of the pages image flipped after the checkpoint was sealed.
TEST(PageServer, RefusesAChunkThatDoesNotMatchItsSealedDigest) {
  Fixture f;
  std::string tampered = f.pages;
  tampered[6 * kCriuPageSize + 123] ^= 1;  // chunk 3 (pages 6-7)
  f.write_pages(tampered);
  auto server = f.server();
  // Pages before the flipped chunk are still served.
  f.send({kPsIovGet, 1, 0x20000, kPid});
  ASSERT_TRUE(server.serve_one(f.server_sk));
  EXPECT_EQ(f.answer().second, f.pages.substr(4 * kCriuPageSize, kCriuPageSize));
  // The range at 0x40000 starts in chunk 2 and runs into chunk 3: refused as a whole.
  f.send({kPsIovGet, 4, 0x40000, kPid});
  auto more = server.serve_one(f.server_sk);
  ASSERT_FALSE(more);
  EXPECT_EQ(more.error().code(), EBADMSG) << more.error().message();
  EXPECT_NE(more.error().message().find("pages-5.img chunk 3"), std::string::npos)
      << more.error().message();
  EXPECT_TRUE(f.nothing_sent());
}

TEST(PageServer, RefusesAShortenedPagesImage) {
  Fixture f;
  f.write_pages(f.pages.substr(0, 7 * kCriuPageSize));
  auto server = f.server();
  f.send({kPsIovGet, 1, 0x43000, kPid});
  auto more = server.serve_one(f.server_sk);
  ASSERT_FALSE(more);
  EXPECT_EQ(more.error().code(), EBADMSG);
  EXPECT_TRUE(f.nothing_sent());
}

// Attack: requests outside what the checkpoint holds lazily, and oversized ones.
TEST(PageServer, RefusesRequestsOutsideTheLazyPagemap) {
  const std::vector<PageServerIov> refused = {
      {kPsIovGet, 1, 0x30000, kPid},                     // between ranges
      {kPsIovGet, 1, 0x1000, kPid},                      // present but not lazy
      {kPsIovGet, 1, 0x10000, kPid + 1},                 // another task
      {kPsIovGet, 1, 0x10001, kPid},                     // unaligned
      {kPsIovGet, kMaxRequestPages + 1, 0x10000, kPid},  // oversized
      {kPsIovGet, 0, 0x10000, kPid},                     // empty
      {kPsIovGet | (1u << 16), 1, 0x10000, kPid},        // flags on GET
      {1, 1, 0x10000, kPid},                             // PS_IOV_ADD: never to a restore
      {0xdead, 0, 0, 0},                                 // unknown
  };
  for (const auto& req : refused) {
    Fixture f;
    f.write_pages(f.pages);
    auto server = f.server();
    f.send(req);
    auto more = server.serve_one(f.server_sk);
    EXPECT_FALSE(more) << std::hex << req.cmd << " " << req.vaddr << " " << req.nr_pages;
    if (!more) {
      EXPECT_EQ(more.error().kind(), ErrorKind::kInvalidInput) << more.error().message();
    }
    EXPECT_TRUE(f.nothing_sent());
  }
}

TEST(PageServer, RefusesATruncatedRequest) {
  Fixture f;
  f.write_pages(f.pages);
  auto server = f.server();
  ASSERT_EQ(::send(f.client, "abc", 3, 0), 3);
  ::shutdown(f.client, SHUT_WR);
  EXPECT_FALSE(server.serve_one(f.server_sk));
}

TEST(VerifiedPagesFile, NeedsOneDigestPerChunk) {
  TempDir dir;
  ASSERT_TRUE(write_file_atomic(dir / "p", std::string(10000, 'x'), 0600));
  auto fd = open_file(dir / "p", O_RDONLY);
  ASSERT_TRUE(fd);
  EXPECT_FALSE(VerifiedPagesFile::make(std::move(*fd), "p", 10000, kChunk, {std::string(64, 'a')}));
}

TEST(VerifiedPagesFile, ChecksWhatAChunkSourceGives) {
  std::string pages(3 * kChunk + 100, '\0');
  for (std::size_t i = 0; i < pages.size(); ++i) pages[i] = static_cast<char>(i * 7 + 3);
  std::vector<std::string> digests;
  for (uint64_t off = 0; off < pages.size(); off += kChunk)
    digests.push_back(sha256_hex(std::string_view(pages).substr(off, kChunk)));
  bool lie = false;
  int calls = 0;
  auto source = [&](uint64_t offset, std::size_t len) -> Result<std::vector<char>> {
    ++calls;
    std::vector<char> out(pages.begin() + static_cast<std::ptrdiff_t>(offset),
                          pages.begin() + static_cast<std::ptrdiff_t>(offset + len));
    if (lie) out[len / 2] ^= 1;
    return out;
  };
  auto f = VerifiedPagesFile::make(PageChunkSource(source), "pages-1.img", pages.size(), kChunk,
                                   digests);
  ASSERT_TRUE(f) << f.error().message();
  EXPECT_EQ(f->fd(), -1);
  std::string out(pages.size() - 5, '\0');
  ASSERT_TRUE(f->read(5, out.data(), out.size()));
  EXPECT_EQ(out, pages.substr(5));
  EXPECT_EQ(calls, 4);
  lie = true;  // a chunk not cached any more comes back altered: refused, nothing copied
  auto g = VerifiedPagesFile::make(PageChunkSource(source), "pages-1.img", pages.size(), kChunk,
                                   digests);
  ASSERT_TRUE(g);
  std::string two(10, 'z');
  auto r = g->read(kChunk, two.data(), two.size());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), EBADMSG);
  EXPECT_EQ(two, std::string(10, 'z'));
  // A source that gives a short chunk is refused too.
  auto h = VerifiedPagesFile::make(
      PageChunkSource(
          [](uint64_t, std::size_t) -> Result<std::vector<char>> { return std::vector<char>(1); }),
      "pages-1.img", pages.size(), kChunk, digests);
  ASSERT_TRUE(h);
  EXPECT_FALSE(h->read(0, two.data(), 1));
}

}  // namespace
}  // namespace arch
