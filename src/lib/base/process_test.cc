// Tests for Process: capture, exit codes, signals, timeouts, fd plan.
#include "base/process.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "base/temp_dir.h"

namespace arch {
namespace {

TEST(Process, CapturesStdoutAndStderrSeparately) {
  auto r = run_process({"/bin/sh", "-c", "echo out; echo err >&2; exit 3"});
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->exit_code, 3);
  EXPECT_EQ(r->out, "out\n");
  EXPECT_EQ(r->err, "err\n");
  EXPECT_FALSE(r->ok());
}

TEST(Process, ReportsSignalsAndTimeouts) {
  auto killed = run_process({"/bin/sh", "-c", "kill -9 $$"});
  ASSERT_TRUE(killed);
  EXPECT_EQ(killed->exit_code, 137);
  ProcessOptions opts;
  opts.timeout = std::chrono::milliseconds(200);
  auto slow = run_process({"/bin/sleep", "30"}, opts);
  ASSERT_TRUE(slow);
  EXPECT_TRUE(slow->timed_out);
  EXPECT_EQ(slow->exit_code, 137);
}

TEST(Process, StdinIsDevNullAndNoStrayFds) {
  auto r = run_process({"/bin/sh", "-c", "cat; ls /proc/self/fd | wc -l"});
  ASSERT_TRUE(r);
  // 0, 1, 2 and the fd ls opens for /proc/self/fd.
  EXPECT_EQ(r->out, "4\n");
}

TEST(Process, RefusesRelativePathsAndReportsMissingBinaries) {
  EXPECT_FALSE(run_process({"sh", "-c", "true"}));
  auto r = run_process({"/nonexistent/binary"});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->exit_code, 127);
}

}  // namespace
}  // namespace arch

namespace arch {
namespace {

bool wait_for_file(const std::string& path, std::chrono::milliseconds limit) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (std::filesystem::exists(path)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return std::filesystem::exists(path);
}

TEST(WatchExit, RunsOnlyAfterTheWatchedProcessEnds) {
  TempDir dir("watch-exit-");
  std::string done = dir / "done";
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::pause();
    ::_exit(0);
  }
  ASSERT_TRUE(watch_exit(child, [&] { std::ofstream(done) << "after"; }));
  EXPECT_FALSE(wait_for_file(done, std::chrono::milliseconds(100)));  // Still running.
  ::kill(child, SIGKILL);
  int status = 0;
  ::waitpid(child, &status, 0);
  EXPECT_TRUE(wait_for_file(done, std::chrono::seconds(5)));
}

TEST(WatchExit, FailsForAProcessThatIsGone) {
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) ::_exit(0);
  int status = 0;
  ::waitpid(child, &status, 0);
  EXPECT_FALSE(watch_exit(child, [] {}));
}

}  // namespace
}  // namespace arch
