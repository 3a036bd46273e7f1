#include "container/dump_progress.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "base/temp_dir.h"

namespace arch {
namespace {

// A stand-in for `runc checkpoint --image-path IMAGES` with a `criu swrk` child: a shell
// whose arguments name the images directory, running a child shell whose arguments hold
// "swrk". Returns the outer shell's pid.
pid_t fake_dump(const std::string& images) {
  pid_t pid = ::fork();
  if (pid == 0) {
    ::execl("/bin/sh", "/bin/sh", "-c", "/bin/sh -c 'sleep 60; true' swrk & wait", "sh",
            "checkpoint", "--image-path", images.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  return pid;
}

void wait_for_children(const std::string& images, std::size_t n) {
  for (int i = 0; i < 200 && dump_criu_pids(images).size() < n; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

TEST(DumpProgress, EndsOnlyTheCriuOfThatDump) {
  TempDir tmp("arch-dump-progress-");
  auto* dir = &tmp;
  std::string images = dir->path() + "/images";
  pid_t dump = fake_dump(images);
  pid_t other = fake_dump(images + "-other");  // another dump, a longer path
  wait_for_children(images, 1);
  wait_for_children(images + "-other", 1);
  ASSERT_EQ(dump_criu_pids(images).size(), 1u);
  // Neither a prefix of the path nor an empty one names a dump.
  EXPECT_TRUE(dump_criu_pids(dir->path() + "/imag").empty());
  EXPECT_TRUE(dump_criu_pids("").empty());
  auto ended = end_dump_criu(images);
  ASSERT_TRUE(ended) << ended.error().message();
  EXPECT_EQ(*ended, 1);
  int status = 0;
  ASSERT_EQ(::waitpid(dump, &status, 0), dump);             // its child gone, `wait` returns
  EXPECT_EQ(dump_criu_pids(images + "-other").size(), 1u);  // the other dump untouched
  for (pid_t pid : dump_criu_pids(images + "-other")) ::kill(pid, SIGKILL);
  ::waitpid(other, &status, 0);
}

TEST(DumpProgress, CountsBytesWrittenUnderTheDirectory) {
  TempDir tmp("arch-dump-progress-");
  auto* dir = &tmp;
  DumpProgress progress(dir->path());
  uint64_t before = progress.bytes();
  {
    std::ofstream f(dir->path() + "/pages.img", std::ios::binary);
    std::string block(4 << 20, 'x');
    f << block;
  }
  ::sync();
  EXPECT_GE(progress.bytes(), before + (uint64_t{4} << 20));
  uint64_t seen = progress.bytes();
  EXPECT_GE(progress.bytes(), seen);  // never decreases
}

}  // namespace
}  // namespace arch
