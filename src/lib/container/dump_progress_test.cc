#include "container/dump_progress.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

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

// The same fake dump, started the way a container's process would run: not a child of this
// process (here a grandchild left to the reaper, in its own session). Returns its pid.
pid_t fake_dump_not_ours(const std::string& images) {
  int fds[2];
  if (::pipe(fds) != 0) return -1;
  pid_t mid = ::fork();
  if (mid == 0) {
    ::close(fds[0]);
    ::setsid();
    pid_t pid = fake_dump(images);
    (void)!::write(fds[1], &pid, sizeof pid);
    ::_exit(0);
  }
  ::close(fds[1]);
  pid_t pid = -1;
  (void)!::read(fds[0], &pid, sizeof pid);
  ::close(fds[0]);
  int status = 0;
  ::waitpid(mid, &status, 0);
  return pid;
}

bool alive(pid_t pid) {
  auto stat = std::ifstream("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  auto close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() && line[close + 2] != 'Z';
}

// Attack: a process in a container gives itself the command line of `runc checkpoint
// --image-path <the staging's images>` (the staging's name can be guessed) with a `criu`
// child, hoping the stop of a late dump kills a process of its choosing. Only the dump this
// process started (its own child) is ended; the impostor and its child are never signalled.
TEST(DumpProgress, AnImpostorOfTheDumpIsNeverEnded) {
  TempDir tmp("arch-dump-progress-");
  std::string images = tmp.path() + "/images";
  pid_t impostor = fake_dump_not_ours(images);
  ASSERT_GT(impostor, 0);
  pid_t real = fake_dump(images);
  std::vector<pid_t> impostor_children;
  struct Cleanup {  // also when an assertion ends the test early
    pid_t impostor, real;
    std::vector<pid_t>& children;
    ~Cleanup() {
      ::kill(-impostor, SIGKILL);  // its session and process group
      for (pid_t pid : children) ::kill(pid, SIGKILL);
      ::kill(real, SIGKILL);
      ::waitpid(real, nullptr, WNOHANG);
    }
  } cleanup{impostor, real, impostor_children};
  wait_for_children(images, 1);
  // The impostor's `criu` runs (a child of the impostor) before the stop.
  for (int i = 0; i < 200 && impostor_children.empty(); ++i) {
    for (const auto& e : std::filesystem::directory_iterator("/proc")) {
      std::string name = e.path().filename();
      if (name.find_first_not_of("0123456789") != std::string::npos) continue;
      std::ifstream st(e.path() / "stat");
      std::string line;
      std::getline(st, line);
      auto close = line.rfind(')');
      if (close == std::string::npos) continue;
      std::istringstream rest(line.substr(close + 2));
      std::string state;
      pid_t ppid = 0;
      rest >> state >> ppid;
      if (ppid == impostor) impostor_children.push_back(std::stoi(name));
    }
    if (impostor_children.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_FALSE(impostor_children.empty());
  auto listed = dump_criu_pids(images);
  ASSERT_EQ(listed.size(), 1u);  // the real dump's CRIU only
  for (pid_t pid : impostor_children) EXPECT_NE(listed.front(), pid);
  auto ended = end_dump_criu(images);
  ASSERT_TRUE(ended) << ended.error().message();
  EXPECT_EQ(*ended, 1);
  int status = 0;
  ASSERT_EQ(::waitpid(real, &status, 0), real);  // the real dump's CRIU was ended
  EXPECT_TRUE(alive(impostor));
  for (pid_t pid : impostor_children) EXPECT_TRUE(alive(pid)) << "impostor's child " << pid;
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
