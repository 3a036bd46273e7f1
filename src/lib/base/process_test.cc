// Tests for Process: capture, exit codes, signals, timeouts, fd plan.
#include "base/process.h"

#include <gtest/gtest.h>

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
