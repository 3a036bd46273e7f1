// PageReceiver: constructed dump streams give the images a local dump writes; every
// refusal; the listener admits only the connection its check accepts.
#include "criu/page_receiver.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include "base/file_util.h"
#include "base/temp_dir.h"
#include "criu/page_server.h"
#include "criu/pagemap_image.h"
#include "store/image_stream.h"
#include "store/manifest.h"

namespace arch {
namespace {

// pagemap-1.img of a real local dump (CRIU 4.2.1, `runc checkpoint` of a busybox sh): 7
// ranges, flags PE_PRESENT (4) and PE_PRESENT|PE_LAZY (6), 16 pages in pages-1.img.
constexpr unsigned char kLocalPagemap[] = {
    0x19, 0x43, 0x56, 0x54, 0x25, 0x40, 0x08, 0x56, 0x02, 0x00, 0x00, 0x00, 0x08, 0x01, 0x0b, 0x00,
    0x00, 0x00, 0x08, 0x80, 0xa0, 0x80, 0x02, 0x10, 0x00, 0x20, 0x04, 0x28, 0x01, 0x0b, 0x00, 0x00,
    0x00, 0x08, 0x80, 0x80, 0xf8, 0x02, 0x10, 0x00, 0x20, 0x04, 0x28, 0x05, 0x0b, 0x00, 0x00, 0x00,
    0x08, 0x80, 0xa0, 0xf9, 0x02, 0x10, 0x00, 0x20, 0x06, 0x28, 0x01, 0x0b, 0x00, 0x00, 0x00, 0x08,
    0x80, 0xc0, 0xfa, 0x02, 0x10, 0x00, 0x20, 0x06, 0x28, 0x02, 0x0b, 0x00, 0x00, 0x00, 0x08, 0x80,
    0x80, 0x83, 0x52, 0x10, 0x00, 0x20, 0x06, 0x28, 0x02, 0x0e, 0x00, 0x00, 0x00, 0x08, 0x80, 0x80,
    0xfb, 0x81, 0xf3, 0xf2, 0x1f, 0x10, 0x00, 0x20, 0x04, 0x28, 0x02, 0x0e, 0x00, 0x00, 0x00, 0x08,
    0x80, 0xc0, 0xac, 0xf9, 0xce, 0xff, 0x1f, 0x10, 0x00, 0x20, 0x06, 0x28, 0x03};

std::string iov(uint32_t cmd, uint64_t nr, uint64_t vaddr, uint64_t dst) {
  auto b = encode_page_server_iov({cmd, nr, vaddr, dst});
  return std::string(b.data(), b.size());
}
std::string pages_of(uint64_t vaddr, uint64_t nr) {
  std::string out;
  for (uint64_t p = 0; p < nr; ++p) {
    std::string page(kCriuPageSize, '\0');
    for (std::size_t i = 0; i < page.size(); i += 8) {
      uint64_t word = vaddr + i;
      std::memcpy(page.data() + i, &word, 8);
    }
    page[8] = static_cast<char>(p);
    out += page;
    vaddr += kCriuPageSize;
  }
  return out;
}
constexpr uint64_t kPid1 = 1 << 8 | 1;

struct Run {
  Result<PageReceiverResult> result = std::unexpected(Error("not run"));
  std::string replies;
};

// Sends `stream` (then closes our side) to a receiver on a socketpair.
Run run_stream(const std::string& stream, const PageReceiverOptions& o) {
  int sv[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd ours(sv[0]), theirs(sv[1]);
  std::thread writer([&] {
    (void)write_all(ours.get(), stream);
    ::shutdown(ours.get(), SHUT_WR);
  });
  Run r;
  r.result = receive_pages(theirs.get(), o);
  theirs.reset();  // a refusal closes: the writer's send fails instead of blocking
  writer.join();
  ::shutdown(ours.get(), SHUT_WR);
  if (auto rest = read_all(ours.get(), 1 << 20)) r.replies = *rest;
  return r;
}

class PageReceiverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_.emplace();
    auto fd = open_file(dir_->path(), O_RDONLY | O_DIRECTORY);
    ASSERT_TRUE(fd);
    dirfd_ = std::move(*fd);
    opts_.images_dirfd = dirfd_.get();
    opts_.max_bytes = 64 << 20;
  }
  std::string read(const std::string& name) {
    auto t = read_file(dir_->path() + "/" + name, 256 << 20);
    return t ? *t : std::string("<missing>");
  }
  // The stream CRIU sends for the local dump above.
  std::string local_dump_stream(std::string* pages) {
    auto map = parse_pagemap_image(
        std::string_view(reinterpret_cast<const char*>(kLocalPagemap), sizeof kLocalPagemap));
    EXPECT_TRUE(map);
    std::string s = iov(kPsIovOpen2, 0, 0, kPid1);
    for (const auto& r : map->ranges) {
      s += iov(kPsIovAddF | r.flags << 16, r.nr_pages, r.vaddr, kPid1);
      std::string p = pages_of(r.vaddr, r.nr_pages);
      s += p;
      *pages += p;
    }
    return s;
  }
  std::optional<TempDir> dir_;
  UniqueFd dirfd_;
  PageReceiverOptions opts_;
};

TEST_F(PageReceiverTest, WritesWhatALocalDumpWrites) {
  std::string pages;
  std::string s = local_dump_stream(&pages);
  // A shared memory object with one lazy page at offset 0.
  s += iov(kPsIovOpen2, 0, 0, uint64_t{77} << 8 | 2);
  s += iov(kPsIovAddF | (kPePresent | kPeLazy) << 16, 1, 0, uint64_t{77} << 8 | 2);
  std::string shm = pages_of(0, 1);
  s += shm + iov(kPsIovFlush, 0, 0, 0);
  auto run = run_stream(s, opts_);
  ASSERT_TRUE(run.result) << run.result.error().message();
  EXPECT_EQ(run.replies, std::string("\0\0", 2) + std::string(4, '\0'));  // has_parent x2, 0
  EXPECT_EQ(read("pagemap-1.img"),
            std::string(reinterpret_cast<const char*>(kLocalPagemap), sizeof kLocalPagemap));
  EXPECT_EQ(read("pages-1.img"), pages);
  EXPECT_EQ(read("pages-2.img"), shm);
  auto shm_map = parse_pagemap_image(read("pagemap-shmem-77.img"));
  ASSERT_TRUE(shm_map) << shm_map.error().message();
  EXPECT_EQ(shm_map->pages_id, 2u);
  ASSERT_EQ(run.result->pages.size(), 2u);
  const auto& p = run.result->pages[0];
  EXPECT_EQ(p.name, "pages-1.img");
  EXPECT_EQ(p.stored, "pages-1.img");
  EXPECT_EQ(p.size, pages.size());
  // The digests computed as the pages passed are those the commit would compute.
  auto fd = open_file(dir_->path() + "/pages-1.img", O_RDONLY);
  ASSERT_TRUE(fd);
  auto d = digest_fd(fd->get(), kPagesChunkSize);
  ASSERT_TRUE(d);
  EXPECT_EQ(p.stored_sha256, d->sha256);
  EXPECT_EQ(p.chunk_sha256, d->chunks);
  EXPECT_EQ(run.result->page_bytes, pages.size() + shm.size());
}

TEST_F(PageReceiverTest, LargePagesImageHasChunkDigests) {
  std::string s = iov(kPsIovOpen2, 0, 0, kPid1);
  std::string pages;
  for (int i = 0; i < 3; ++i) {  // 3 x 512 pages = 6 MiB: 6 chunks
    uint64_t va = 0x10000000 + static_cast<uint64_t>(i) * (1 << 22);
    s += iov(kPsIovAddF | kPePresent << 16, 512, va, kPid1);
    std::string p = pages_of(va, 512);
    s += p;
    pages += p;
  }
  s += iov(kPsIovFlushNClose, 0, 0, 0);
  auto run = run_stream(s, opts_);
  ASSERT_TRUE(run.result) << run.result.error().message();
  EXPECT_EQ(read("pages-1.img"), pages);
  EXPECT_EQ(run.result->pages[0].chunk_sha256.size(), 6u);
}

TEST_F(PageReceiverTest, EncryptedPagesAreSealedChunks) {
  Keyring keys;
  keys.add({node_key_id(std::string(32, 'k')), std::string(32, 'k')}, true);
  opts_.key = keys.active();
  opts_.stream_id = "00112233445566778899aabbccddeeff";
  std::string pages;
  std::string s = local_dump_stream(&pages) + iov(kPsIovFlush, 0, 0, 0);
  auto run = run_stream(s, opts_);
  ASSERT_TRUE(run.result) << run.result.error().message();
  EXPECT_EQ(read("pages-1.img"), "<missing>");
  std::string stored = read("pages-1.img.arch");
  EXPECT_EQ(stored.find(pages.substr(0, 64)), std::string::npos);  // no plaintext
  auto fd = open_file(dir_->path() + "/pages-1.img.arch", O_RDONLY);
  ASSERT_TRUE(fd);
  std::string back;
  auto read_back = read_image_stream(fd->get(), keys, opts_.stream_id, "pages-1.img",
                                     [&](std::string_view p) -> Result<void> {
                                       back += p;
                                       return {};
                                     });
  ASSERT_TRUE(read_back) << read_back.error().message();
  EXPECT_EQ(back, pages);
  const auto& p = run.result->pages[0];
  EXPECT_EQ(p.stored, "pages-1.img.arch");
  EXPECT_EQ(p.stored_size, stored.size());
  // Random access, as the lazy page server reads it.
  auto rfd = open_file(dir_->path() + "/pages-1.img.arch", O_RDONLY);
  ASSERT_TRUE(rfd);
  auto reader = ImageStreamReader::open(std::move(*rfd), keys, opts_.stream_id, "pages-1.img");
  ASSERT_TRUE(reader) << reader.error().message();
  EXPECT_EQ(reader->size(), pages.size());
  auto part = reader->read(4096 * 3, 8192);
  ASSERT_TRUE(part);
  EXPECT_EQ(std::string(part->data(), part->size()), pages.substr(4096 * 3, 8192));
  // Under another name (the key and the AAD bind it) nothing reads.
  auto wfd = open_file(dir_->path() + "/pages-1.img.arch", O_RDONLY);
  ASSERT_TRUE(wfd);
  auto wrong = ImageStreamReader::open(std::move(*wfd), keys, opts_.stream_id, "pages-2.img");
  ASSERT_TRUE(wrong);
  EXPECT_FALSE(wrong->read(0, 4096));
}

TEST_F(PageReceiverTest, RefusesWhatADumpDoesNotSend) {
  const std::string open = iov(kPsIovOpen2, 0, 0, kPid1);
  const std::string one = pages_of(0x1000, 1);
  struct Case {
    const char* what;
    std::string stream;
  } cases[] = {
      {"GET", open + iov(kPsIovGet, 1, 0x1000, kPid1)},
      {"ADD", open + iov(kPsIovAdd, 1, 0x1000, kPid1) + one},
      {"HOLE", open + iov(kPsIovHole, 1, 0x1000, kPid1)},
      {"PARENT", iov(kPsIovParent, 0, 0, kPid1)},
      {"OPEN", iov(kPsIovOpen, 0, 0, kPid1)},
      {"unknown", iov(0x77, 0, 0, 0)},
      {"flagged open", iov(kPsIovOpen2 | 1 << 16, 0, 0, kPid1)},
      {"unknown type", iov(kPsIovOpen2, 0, 0, uint64_t{1} << 8 | 3)},
      {"open twice", open + iov(kPsIovOpen2, 0, 0, kPid1)},
      {"add before open", iov(kPsIovAddF | kPePresent << 16, 1, 0x1000, kPid1) + one},
      {"other image", open + iov(kPsIovAddF | kPePresent << 16, 1, 0x1000, kPid1 + 256) + one},
      {"parent flag", open + iov(kPsIovAddF | kPeParent << 16, 1, 0x1000, kPid1)},
      {"lazy only", open + iov(kPsIovAddF | kPeLazy << 16, 1, 0x1000, kPid1)},
      {"zero pages", open + iov(kPsIovAddF | kPePresent << 16, 0, 0x1000, kPid1)},
      {"too many pages",
       open + iov(kPsIovAddF | kPePresent << 16, kMaxReceivePages + 1, 0x1000, kPid1)},
      {"unaligned", open + iov(kPsIovAddF | kPePresent << 16, 1, 0x1001, kPid1) + one},
      {"overflowing", open + iov(kPsIovAddF | kPePresent << 16, 2, ~uint64_t{0} - 4095, kPid1)},
      {"overlapping", open + iov(kPsIovAddF | kPePresent << 16, 1, 0x1000, kPid1) + one +
                          iov(kPsIovAddF | kPePresent << 16, 1, 0x1000, kPid1) + one},
      {"over the limit", open + iov(kPsIovAddF | kPePresent << 16, 300, 0x1000, kPid1)},
      {"truncated pages", open + iov(kPsIovAddF | kPePresent << 16, 2, 0x1000, kPid1) + one},
      {"truncated header", open + iov(kPsIovFlush, 0, 0, 0).substr(0, 10)},
      {"no flush", open + iov(kPsIovAddF | kPePresent << 16, 1, 0x1000, kPid1) + one},
      {"after the flush", open + iov(kPsIovFlush, 0, 0, 0) + iov(kPsIovOpen2, 0, 0, kPid1 + 256)},
  };
  opts_.max_bytes = 256 * kCriuPageSize;
  for (const auto& c : cases) {
    SetUp();
    opts_.max_bytes = 256 * kCriuPageSize;
    auto run = run_stream(c.stream, opts_);
    EXPECT_FALSE(run.result) << c.what;
    if (!run.result) {
      EXPECT_NE(run.result.error().message().find("page receiver"), std::string::npos) << c.what;
    }
    // Nothing of a refused request was written, and no flush was acknowledged (but the
    // one before a stray command).
    if (std::string_view(c.what) != "after the flush") {
      EXPECT_LE(run.replies.size(), 1u) << c.what;
    }
    std::string p = read("pages-1.img");
    EXPECT_TRUE(p == "<missing>" || p.size() <= one.size()) << c.what;
  }
}

TEST(PageReceiverListener, AdmitsOnlyTheAcceptedPeer) {
  auto l = PageReceiverListener::listen();
  ASSERT_TRUE(l) << l.error().message();
  EXPECT_EQ(l->address(), "127.0.0.1:" + std::to_string(l->port()));
  auto connect_one = [&] {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(l->port());
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    return UniqueFd(fd);
  };
  UniqueFd impostor = connect_one();
  ASSERT_TRUE(write_all(impostor.get(), iov(kPsIovOpen2, 0, 0, kPid1)));
  UniqueFd real = connect_one();
  // The check: the peer's socket must be `real` (held by this process, found by inode).
  sockaddr_in mine{};
  socklen_t len = sizeof mine;
  ASSERT_EQ(::getsockname(real.get(), reinterpret_cast<sockaddr*>(&mine), &len), 0);
  uint64_t refused = 0;
  auto conn = l->accept_admitted(
      [&](int fd) {
        auto inode = peer_socket_inode(fd);
        EXPECT_TRUE(inode) << (inode ? "" : inode.error().message());
        if (!inode) return false;
        EXPECT_TRUE(process_holds_socket(::getpid(), *inode));
        EXPECT_FALSE(process_holds_socket(::getppid(), *inode));
        sockaddr_in peer{};
        socklen_t plen = sizeof peer;
        ::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &plen);
        return peer.sin_port == mine.sin_port;
      },
      &refused);
  ASSERT_TRUE(conn) << conn.error().message();
  ASSERT_TRUE(*conn);
  EXPECT_EQ(refused, 1u);
  char c = 0;
  EXPECT_LE(::recv(impostor.get(), &c, 1, 0), 0);  // closed on it, nothing answered
  // Cancel ends a wait with no connection.
  l->cancel();
  auto none = l->accept_admitted([](int) { return true; });
  ASSERT_TRUE(none);
  EXPECT_FALSE(*none);
}

}  // namespace
}  // namespace arch
