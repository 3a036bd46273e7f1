// Tests for CriuRpc against the real CRIU (skipped without it or without root): version,
// a dump and restore of a child process tree with the restored root our child again, and
// a failing dump's structured error; plus the log reader.
#include "criu/criu_rpc.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "base/file_util.h"
#include "base/temp_dir.h"

namespace arch {
namespace {

namespace fs = std::filesystem;

const char* kCriu = "/opt/arch/criu/bin/criu";

bool have_criu() {
  return ::access(kCriu, X_OK) == 0;
}

std::vector<long> read_counts(const fs::path& p) {
  std::ifstream in(p);
  std::vector<long> out;
  long n;
  while (in >> n) out.push_back(n);
  return out;
}

bool wait_for(const std::function<bool()>& cond, std::chrono::seconds timeout) {
  auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return cond();
}

// A child in its own session, fds 0-2 on /dev/null, appending a counter to `file`.
pid_t start_counter(const fs::path& file) {
  pid_t pid = ::fork();
  if (pid == 0) {
    ::setsid();
    int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    int null = ::open("/dev/null", O_RDWR);
    ::dup2(null, 0);
    ::dup2(null, 1);
    ::dup2(null, 2);
    if (fd != 3) ::dup2(fd, 3);
    ::close_range(4, ~0U, 0);
    for (long i = 0;; ++i) {
      char buf[32];
      int n = std::snprintf(buf, sizeof buf, "%ld\n", i);
      if (::write(3, buf, static_cast<size_t>(n)) != n) ::_exit(1);
      ::usleep(5000);
    }
  }
  return pid;
}

TEST(CriuLogErrors, KeepsTheLastErrorLinesWithoutTheRlimitNoise) {
  TempDir d("criu-rpc-test-");
  std::ofstream(d / "x.log") << "(00.1) info\n"
                                "(00.2) Error (criu/util.c:1533): rlimit: Can't setup "
                                "RLIMIT_NOFILE for self: Operation not permitted\n"
                                "(00.3) Error (criu/files-reg.c:2): File a has bad size\n"
                                "(00.4) Error (criu/cr-restore.c:1): Restoring FAILED.\n";
  auto dir = open_file(d.path(), O_RDONLY | O_DIRECTORY);
  ASSERT_TRUE(dir);
  std::string out = criu_log_errors(dir->get(), "x.log");
  EXPECT_EQ(out,
            "  (00.3) Error (criu/files-reg.c:2): File a has bad size\n"
            "  (00.4) Error (criu/cr-restore.c:1): Restoring FAILED.");
  EXPECT_EQ(criu_log_errors(dir->get(), "x.log", 1),
            "  (00.4) Error (criu/cr-restore.c:1): Restoring FAILED.");
  EXPECT_EQ(criu_log_errors(dir->get(), "missing.log"), "");
}

TEST(CriuRpc, RefusesARelativeOrMissingBinary) {
  EXPECT_FALSE(CriuRpc("criu").version());
  EXPECT_FALSE(CriuRpc("/nonexistent/criu").version());
}

TEST(CriuRpc, VersionOverSwrk) {
  if (!have_criu()) GTEST_SKIP() << kCriu << " missing";
  auto v = CriuRpc(kCriu).version();
  ASSERT_TRUE(v) << v.error().message();
  EXPECT_GE(v->major, 3);
  EXPECT_FALSE(v->text().empty());
}

TEST(CriuRpc, DumpAndRestoreAChildThatStaysOurs) {
  if (!have_criu() || ::geteuid() != 0) GTEST_SKIP() << "needs root and " << kCriu;
  TempDir d("criu-rpc-test-");
  fs::create_directories(d / "images");
  fs::path count = d / "count.txt";
  pid_t pid = start_counter(count);
  ASSERT_TRUE(wait_for([&] { return read_counts(count).size() >= 20; }, std::chrono::seconds(10)));

  auto images = open_file(d / "images", O_RDONLY | O_DIRECTORY);
  auto work = open_file(d.path(), O_RDONLY | O_DIRECTORY);
  ASSERT_TRUE(images && work);
  CriuDumpOptions dump;
  dump.pid = pid;
  dump.images_dir_fd = images->get();
  dump.work_dir_fd = work->get();
  dump.log_file = "dump.log";
  auto dumped = CriuRpc(kCriu).dump(dump);
  ASSERT_TRUE(dumped) << dumped.error().message();
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  std::size_t at_dump = read_counts(count).size();

  CriuRestoreOptions restore;
  restore.images_dir_fd = images->get();
  restore.work_dir_fd = work->get();
  restore.log_file = "restore.log";
  auto restored = CriuRpc(kCriu).restore(restore);
  ASSERT_TRUE(restored) << restored.error().message();
  EXPECT_EQ(*restored, pid);
  ASSERT_TRUE(wait_for([&] { return read_counts(count).size() >= at_dump + 20; },
                       std::chrono::seconds(10)));
  auto counts = read_counts(count);
  for (std::size_t i = 0; i < counts.size(); ++i) ASSERT_EQ(counts[i], static_cast<long>(i));
  // rst_sibling: the restored root is our child, so we reap it.
  ::kill(pid, SIGTERM);
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM);
}

TEST(CriuRpc, AFailedDumpSaysWhy) {
  if (!have_criu() || ::geteuid() != 0) GTEST_SKIP() << "needs root and " << kCriu;
  TempDir d("criu-rpc-test-");
  pid_t pid = ::fork();
  if (pid == 0) ::_exit(0);
  ::waitpid(pid, nullptr, 0);  // A pid that no longer exists.
  auto dir = open_file(d.path(), O_RDONLY | O_DIRECTORY);
  ASSERT_TRUE(dir);
  CriuDumpOptions dump;
  dump.pid = pid;
  dump.images_dir_fd = dir->get();
  dump.log_file = "dump.log";
  auto dumped = CriuRpc(kCriu).dump(dump);
  ASSERT_FALSE(dumped);
  EXPECT_NE(dumped.error().message().find("criu dump failed"), std::string::npos)
      << dumped.error().message();
  EXPECT_NE(dumped.error().message().find("Error ("), std::string::npos)
      << dumped.error().message();
}

}  // namespace
}  // namespace arch
