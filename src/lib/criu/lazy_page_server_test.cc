// Tests of a verified lazy restore's preparation (private images: copies checked, pages
// sparse with only the non-lazy chunks) and of the page-server process failing closed: a
// refused chunk kills the container before the connection is let go.
#include "criu/lazy_page_server.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "base/file_util.h"
#include "base/temp_dir.h"

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

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kPagesPerMiB = kMiB / kCriuPageSize;

// Task 1: 1 MiB non-lazy (chunk 0), then 2 MiB lazy (chunks 1-2) at 0x7f0000000000.
std::string pagemap() {
  std::string out = u32le(kCriuImgCommonMagic) + u32le(kCriuPagemapMagic) + message(field(1, 1));
  out += message(field(1, 0x400000) + field(2, kPagesPerMiB) + field(4, kPePresent));
  out += message(field(1, 0x7f0000000000) + field(2, 2 * kPagesPerMiB) +
                 field(4, kPePresent | kPeLazy));
  return out;
}

std::string pattern(std::size_t n, char seed) {
  std::string out(n, '\0');
  for (std::size_t i = 0; i < n; ++i)
    out[i] = static_cast<char>(static_cast<std::size_t>(seed) + i % 97);
  return out;
}

struct Checkpoint {
  TempDir dir{"arch-lazysrv-"};
  std::string pages = pattern(3 * kMiB, 'a');
  Manifest manifest;

  Checkpoint() {
    ::mkdir((dir / "images").c_str(), 0700);
    write("images/pagemap-1.img", pagemap());
    write("images/pages-1.img", pages);
    write("images/core-1.img", "core");
    auto m = build_manifest_files(dir.path(), Manifest{});
    if (!m) throw std::runtime_error(m.error().message());
    manifest = *m;
  }
  void write(const std::string& rel, const std::string& bytes) const {
    auto fd = open_file(dir / rel, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (!fd || !write_all(fd->get(), bytes)) throw std::runtime_error("write " + rel);
  }
  [[nodiscard]] ServedPages served() const {
    ServedPages s;
    s.checkpoint = dir.path();
    s.manifest = &manifest;
    return s;
  }
};

TEST(LazyPageServer, PreparesCheckedCopiesAndSparsePages) {
  Checkpoint c;
  TempDir out;
  auto server = prepare_served_images(c.served(), out / "images");
  ASSERT_TRUE(server) << server.error().message();
  EXPECT_EQ(*read_file(out / "images/core-1.img"), "core");
  EXPECT_EQ(*read_file(out / "images/pagemap-1.img"), pagemap());
  auto pages = read_file(out / "images/pages-1.img", 4 * kMiB);
  ASSERT_TRUE(pages);
  ASSERT_EQ(pages->size(), 3 * kMiB);
  // The non-lazy chunk is there (the restore reads it); the lazy ones are holes.
  EXPECT_EQ(pages->substr(0, kMiB), c.pages.substr(0, kMiB));
  EXPECT_EQ(pages->substr(kMiB), std::string(2 * kMiB, '\0'));
  struct stat st {};
  ASSERT_EQ(::stat((out / "images/pages-1.img").c_str(), &st), 0);
  EXPECT_LT(static_cast<uint64_t>(st.st_blocks) * 512, 2 * kMiB);
}

TEST(LazyPageServer, RefusesAnImageThatDoesNotMatchTheSeal) {
  Checkpoint c;
  c.write("images/core-1.img", "CORE");
  TempDir out;
  auto server = prepare_served_images(c.served(), out / "images");
  ASSERT_FALSE(server);
  EXPECT_NE(server.error().message().find("core-1.img does not match"), std::string::npos)
      << server.error().message();
}

TEST(LazyPageServer, RefusesAFlippedByteInANonLazyChunk) {
  Checkpoint c;
  std::string tampered = c.pages;
  tampered[100] ^= 1;
  c.write("images/pages-1.img", tampered);
  TempDir out;
  auto server = prepare_served_images(c.served(), out / "images");
  ASSERT_FALSE(server);
  EXPECT_EQ(server.error().code(), EBADMSG) << server.error().message();
}

// The pages image is not in images/ at all: its bytes come from a page source (another
// node, a decrypting stream), and the non-lazy chunk it gives is still checked.
TEST(LazyPageServer, TakesThePagesFromAPageSourceAndChecksThem) {
  Checkpoint c;
  ASSERT_EQ(::unlink((c.dir / "images/pages-1.img").c_str()), 0);
  std::string given = c.pages;
  std::vector<std::string> asked;
  ServedPages s = c.served();
  s.page_source = [&](const std::string& name) -> Result<PageChunkSource> {
    asked.push_back(name);
    return PageChunkSource([&](uint64_t offset, std::size_t len) -> Result<std::vector<char>> {
      return std::vector<char>(given.begin() + static_cast<std::ptrdiff_t>(offset),
                               given.begin() + static_cast<std::ptrdiff_t>(offset + len));
    });
  };
  TempDir out;
  auto server = prepare_served_images(s, out / "images");
  ASSERT_TRUE(server) << server.error().message();
  EXPECT_EQ(asked, std::vector<std::string>{"pages-1.img"});
  auto pages = read_file(out / "images/pages-1.img", 4 * kMiB);
  ASSERT_TRUE(pages);
  EXPECT_EQ(pages->substr(0, kMiB), c.pages.substr(0, kMiB));
  given[10] ^= 1;  // a source that lies about the non-lazy chunk is refused
  TempDir out2;
  auto refused = prepare_served_images(s, out2 / "images");
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), EBADMSG) << refused.error().message();
}

bool wait_for(const std::function<bool()>& done, std::chrono::seconds limit) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return done();
}

// Attack: a byte of a lazy chunk flipped after the seal. The page server answers nothing,
// kills the container, and only then lets the daemon's connection go.
TEST(LazyPageServer, ARefusedChunkKillsTheContainerBeforeTheConnectionCloses) {
  Checkpoint c;
  std::string tampered = c.pages;
  tampered[2 * kMiB + 5] ^= 1;  // chunk 2: lazy
  c.write("images/pages-1.img", tampered);
  TempDir out;
  auto server = prepare_served_images(c.served(), out / "images");
  ASSERT_TRUE(server) << server.error().message();
  pid_t container = ::fork();
  ASSERT_GE(container, 0);
  if (container == 0) {
    ::pause();
    ::_exit(0);
  }
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd daemon(sv[0]);
  auto proc =
      PageServerProcess::start(std::move(*server), UniqueFd(sv[1]), out / "server.log", nullptr);
  ASSERT_TRUE(proc) << proc.error().message();
  ASSERT_TRUE(proc->hand_over(container));
  // A good lazy chunk first: served.
  auto ask = [&](uint64_t vaddr) {
    auto raw = encode_page_server_iov({kPsIovGet, 1, vaddr, 1});
    ASSERT_EQ(::send(daemon.get(), raw.data(), raw.size(), 0), 32);
  };
  ask(0x7f0000000000);
  std::string reply(32 + kCriuPageSize, '\0');
  ASSERT_EQ(::recv(daemon.get(), reply.data(), reply.size(), MSG_WAITALL),
            static_cast<ssize_t>(reply.size()));
  EXPECT_EQ(reply.substr(32), c.pages.substr(kMiB, kCriuPageSize));
  // Then the tampered one: never answered; the container dies.
  ask(0x7f0000000000 + kMiB);
  int status = 0;
  EXPECT_TRUE(wait_for([&] { return ::waitpid(container, &status, WNOHANG) == container; },
                       std::chrono::seconds(20)));
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  // Only then the connection goes, with nothing sent for the refused request.
  char byte;
  EXPECT_EQ(::recv(daemon.get(), &byte, 1, MSG_WAITALL), 0);
  EXPECT_TRUE(wait_for(
      [&] {
        auto log = read_file(out / "server.log");
        return log && log->find("killed") != std::string::npos;
      },
      std::chrono::seconds(20)));
  auto log = read_file(out / "server.log");
  ASSERT_TRUE(log);
  EXPECT_NE(log->find("pages-1.img chunk 2"), std::string::npos) << *log;
  EXPECT_NE(log->find("does not match its sealed digest"), std::string::npos) << *log;
  pid_t srv = proc->pid();
  proc->release();
  EXPECT_EQ(::waitpid(srv, &status, 0), srv);
}

// A refusal before the container is known: the connection is held (the faulting thread
// stays blocked, no zero-filled page) until the daemon hangs up.
TEST(LazyPageServer, ARefusalWithoutAContainerHoldsTheConnection) {
  Checkpoint c;
  std::string tampered = c.pages;
  tampered[2 * kMiB + 5] ^= 1;
  c.write("images/pages-1.img", tampered);
  TempDir out;
  auto server = prepare_served_images(c.served(), out / "images");
  ASSERT_TRUE(server) << server.error().message();
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd daemon(sv[0]);
  auto proc =
      PageServerProcess::start(std::move(*server), UniqueFd(sv[1]), out / "server.log", nullptr);
  ASSERT_TRUE(proc) << proc.error().message();
  auto raw = encode_page_server_iov({kPsIovGet, 1, 0x7f0000000000 + kMiB, 1});
  ASSERT_EQ(::send(daemon.get(), raw.data(), raw.size(), 0), 32);
  proc->release();  // the caller gives up without a container: the server goes on alone
  EXPECT_TRUE(wait_for(
      [&] {
        auto log = read_file(out / "server.log");
        return log && log->find("not known yet") != std::string::npos;
      },
      std::chrono::seconds(20)));
  // Still open, nothing answered; more requests are read and dropped.
  char byte;
  EXPECT_EQ(::recv(daemon.get(), &byte, 1, MSG_DONTWAIT), -1);
  EXPECT_EQ(errno, EAGAIN);
  ASSERT_EQ(::send(daemon.get(), raw.data(), raw.size(), 0), 32);
  // The daemon is done (its processes are gone) and says so: the session ends, unanswered.
  auto close = encode_page_server_iov({kPsIovFlushNClose, 0, 0, 0});
  ASSERT_EQ(::send(daemon.get(), close.data(), close.size(), 0), 32);
  EXPECT_EQ(::recv(daemon.get(), &byte, 1, MSG_WAITALL), 0);
  int status = 0;
  EXPECT_EQ(::waitpid(proc->pid(), &status, 0), proc->pid());
}

}  // namespace
}  // namespace arch
