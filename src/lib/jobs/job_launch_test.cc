// Tests for JobLaunch's /proc readers and program lookup (no root needed).
#include "jobs/job_launch.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <thread>

namespace arch {
namespace {

bool contains(const std::vector<std::string>& v, const std::string& needle) {
  return std::any_of(v.begin(), v.end(),
                     [&](const std::string& s) { return s.find(needle) != std::string::npos; });
}

TEST(JobLaunch, ResolvesProgramsLikeAShell) {
  auto sh = resolve_program("sh", "/nonexistent:/usr/bin:/bin", "/");
  ASSERT_TRUE(sh) << sh.error().message();
  EXPECT_TRUE(*sh == "/usr/bin/sh" || *sh == "/bin/sh") << *sh;
  EXPECT_EQ(*resolve_program("/bin/sh", "", "/"), "/bin/sh");
  EXPECT_EQ(*resolve_program("bin/sh", "", "/"), "//bin/sh");
  auto missing = resolve_program("no-such-program-xyz", "/usr/bin", "/");
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message().find("not found in PATH"), std::string::npos);
  EXPECT_FALSE(resolve_program("/etc/passwd", "", "/"));  // not executable
  EXPECT_FALSE(resolve_program("", "", "/"));
}

TEST(JobLaunch, ReadsProcStatOfItself) {
  auto st = read_proc_stat(::getpid());
  ASSERT_TRUE(st) << st.error().message();
  EXPECT_EQ(st->ppid, ::getppid());
  EXPECT_EQ(st->sid, ::getsid(0));
  EXPECT_GT(st->start_time, 0u);
  EXPECT_FALSE(read_proc_stat(0x3fffffff));
}

TEST(JobLaunch, TreeAndWarningsForAChildWithAPipeOutAndASocketPair) {
  int p[2], sv[2];
  ASSERT_EQ(::pipe(p), 0);
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  pid_t child = ::fork();
  if (child == 0) {
    ::close(p[0]);  // keeps the write end; the read end stays with the parent
    for (;;) ::pause();
  }
  ::close(p[1]);
  ::close(sv[0]);
  ::close(sv[1]);
  // The child's /proc entries appear once it runs.
  std::vector<std::string> warnings;
  for (int i = 0; i < 200 && !contains(warnings, "pipe:"); ++i) {
    warnings = dump_warnings(child);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_TRUE(contains(warnings, "pipe:[")) << warnings.size();
  EXPECT_TRUE(contains(warnings, "socket:["));
  auto tree = process_tree(::getpid());
  EXPECT_NE(std::find(tree.begin(), tree.end(), child), tree.end());
  EXPECT_EQ(tree.front(), ::getpid());
  EXPECT_FALSE(process_argv(child).empty());
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  ::close(p[0]);
}

}  // namespace
}  // namespace arch
