#include "container/staging_flush.h"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "base/temp_dir.h"
#include "base/unique_fd.h"
#include "container/dump_progress.h"

namespace arch {
namespace {

constexpr uint64_t kMiB = uint64_t{1} << 20;

void write_bytes(const std::string& path, uint64_t n) {
  std::ofstream f(path, std::ios::binary);
  std::string block(static_cast<std::size_t>(kMiB), 'p');
  for (uint64_t done = 0; done < n; done += kMiB) {
    f.write(block.data(), static_cast<std::streamsize>(std::min(kMiB, n - done)));
  }
}

// A staging as a dump leaves it: images/ with a big pages file and small ones, criu/.
uint64_t make_staging(const TempDir& dir, uint64_t pages_bytes) {
  std::filesystem::create_directories(dir / "images");
  std::filesystem::create_directories(dir / "criu");
  write_bytes(dir / "images/pages-1.img", pages_bytes);
  write_bytes(dir / "images/pagemap-1.img", 4096);
  write_bytes(dir / "criu/dump.log", 1000);
  write_bytes(dir / "images/empty.img", 0);
  write_bytes(dir / "rootfs-diff.tar", 10240);
  return pages_bytes + 4096 + 1000 + 10240;
}

UniqueFd open_dir(const std::string& path) {
  return UniqueFd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
}

// The regression behind the finalize defect: a walk before the flush read the staging's
// directory descriptor to its end (readdir on a dup shares the offset), and the flush then
// found no file at all, leaving every page to the commit's fsyncs, where no stop is taken.
TEST(StagingFlush, WritesEveryFileEvenFromADescriptorReadToItsEnd) {
  TempDir tmp("arch-flush-");
  uint64_t total = make_staging(tmp, 20 * kMiB);
  auto dir = open_dir(tmp.path());
  ASSERT_TRUE(dir);
  {
    DIR* d = ::fdopendir(::dup(dir.get()));
    ASSERT_NE(d, nullptr);
    while (::readdir(d) != nullptr) {
    }
    ::closedir(d);  // the shared offset stays at the end
  }
  std::atomic<uint64_t> written{0};
  int asked = 0;
  auto r = flush_staging(
      dir.get(),
      [&] {
        ++asked;
        return false;
      },
      &written, FlushOptions{.chunk = off_t{8} << 20, .in_flight = off_t{16} << 20});
  EXPECT_FALSE(r.stopped);
  EXPECT_EQ(r.bytes, total);
  EXPECT_EQ(written.load(), total);
  EXPECT_EQ(r.chunks, 3u + 3u);  // 20 MiB in 8 MiB chunks, three small files, none empty
  EXPECT_GE(asked, static_cast<int>(r.chunks));  // asked before every chunk
}

// The stop-in-flush path: a stop asked while the images are written to the store ends the
// flush before its next chunk. What was not yet submitted is left (dropped with the
// staging), at most `in_flight` bytes were submitted beyond those on the store, and only
// the chunks waited for count as written.
TEST(StagingFlush, AStopEndsTheFlushBeforeItsNextChunk) {
  TempDir tmp("arch-flush-");
  write_bytes(tmp / "pages-1.img", 64 * kMiB);
  auto dir = open_dir(tmp.path());
  ASSERT_TRUE(dir);
  std::atomic<uint64_t> written{0};
  auto r = flush_staging(
      dir.get(), [&] { return written.load() >= 2 * kMiB; },  // stop once 2 MiB are on the store
      &written, FlushOptions{.chunk = off_t{1} << 20, .in_flight = off_t{2} << 20});
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.bytes, 2 * kMiB);
  EXPECT_EQ(written.load(), r.bytes);
  // Two chunks on the store and two in flight (the bound): not the other 60.
  EXPECT_EQ(r.chunks, 4u);
}

// Without a device counter (tmpfs here, like FUSE, NFS or btrfs), a page-cache store counts
// dirty pages as allocated: progress is capped at what the checkpoint knows is written back.
TEST(StagingFlush, ProgressWithoutADeviceCountsOnlyWhatIsWrittenBack) {
  struct stat st {};
  if (::stat("/dev/shm", &st) != 0 || major(st.st_dev) != 0) {
    GTEST_SKIP() << "no tmpfs at /dev/shm";
  }
  std::string tmpl = "/dev/shm/arch-flush-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
  DumpProgress progress(tmpl);
  ASSERT_FALSE(progress.from_device());
  write_bytes(tmpl + "/pages-1.img", 8 * kMiB);
  EXPECT_EQ(progress.bytes(kMiB), kMiB);  // 8 MiB allocated, 1 MiB written back
  EXPECT_GE(progress.bytes(), 8 * kMiB);  // nothing known: the allocated bytes
  std::filesystem::remove_all(tmpl);
}

}  // namespace
}  // namespace arch
