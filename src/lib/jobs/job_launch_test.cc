// Tests for JobLaunch's /proc readers, program lookup and adoption (no root needed).
#include "jobs/job_launch.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
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

TEST(JobLaunchTest, AdoptsAProcessAndRefusesAMissingOne) {
  pid_t child = ::fork();
  if (child == 0) {
    ::execl("/bin/sleep", "sleep", "30", nullptr);
    ::_exit(127);
  }
  ASSERT_GT(child, 0);
  Result<JobRecord> rec;
  for (int i = 0; i < 200; ++i) {  // until the exec shows in /proc
    rec = adopted_process_record(child, 1234);
    if (rec && rec->name == "sleep") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  ASSERT_TRUE(rec) << rec.error().message();
  EXPECT_EQ(rec->kind, "process");
  EXPECT_EQ(rec->name, "sleep");
  EXPECT_EQ(rec->argv, (std::vector<std::string>{"sleep", "30"}));  // argv[0] as exec gave it
  EXPECT_EQ(rec->pid, child);
  EXPECT_GT(rec->start_time, 0u);
  EXPECT_EQ(rec->state, job_state::kRunning);  // our child
  EXPECT_EQ(rec->cwd, std::filesystem::current_path().string());
  EXPECT_EQ(rec->created, 1234);
  EXPECT_EQ(rec->id.size(), 12u);
  EXPECT_TRUE(rec->log.empty());                    // nothing of ours to read
  auto gone = adopted_process_record(child, 1234);  // reaped: no such process
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code(), ENOENT);
  EXPECT_FALSE(adopted_process_record(1, 0)->state == job_state::kRunning);  // not our child
}

}  // namespace
}  // namespace arch
