// Tests for lazy restore's decisions and the lazy-pages daemon's start-up failures (the
// working path needs root and CRIU: tests/e2e/test_lazy_restore.py).
#include "criu/lazy_pages.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "base/file_util.h"
#include "base/temp_dir.h"
#include "runtime/runc_client.h"

namespace arch {
namespace {

TEST(LazyPages, ContainerSettingWinsOverTheNode) {
  EXPECT_FALSE(lazy_restore_wanted(false, ""));
  EXPECT_TRUE(lazy_restore_wanted(true, ""));
  EXPECT_TRUE(lazy_restore_wanted(false, "1"));
  EXPECT_TRUE(lazy_restore_wanted(false, "true"));
  EXPECT_FALSE(lazy_restore_wanted(true, "0"));
  EXPECT_FALSE(lazy_restore_wanted(true, "false"));
  EXPECT_TRUE(lazy_restore_wanted(true, "maybe"));  // Not understood: the node decides.
  EXPECT_FALSE(lazy_restore_wanted(false, "yes please"));
}

TEST(LazyPages, ConfiguredCriuIsUsedAsIs) {
  auto c = find_criu("/opt/x/criu");
  ASSERT_TRUE(c);
  EXPECT_EQ(*c, "/opt/x/criu");
}

class LazyPagesDaemonTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = tmp_.path(); }
  std::string script(const std::string& name, const std::string& body) {
    std::string path = dir_ + "/" + name;
    std::ofstream(path) << "#!/bin/sh\n" << body << "\n";
    ::chmod(path.c_str(), 0755);
    return path;
  }
  TempDir tmp_{"arch-lazy-test-"};
  std::string dir_;
};

TEST_F(LazyPagesDaemonTest, FailingCriuIsAnError) {
  auto d = LazyPagesDaemon::start(script("criu", "exit 3"), dir_, dir_);
  ASSERT_FALSE(d);
  EXPECT_NE(d.error().message().find("exit status 3"), std::string::npos) << d.error().message();
}

TEST_F(LazyPagesDaemonTest, NoPidFileIsAnError) {
  auto d = LazyPagesDaemon::start(script("criu", "exit 0"), dir_, dir_);
  ASSERT_FALSE(d);
  EXPECT_NE(d.error().message().find("pid file"), std::string::npos) << d.error().message();
}

TEST_F(LazyPagesDaemonTest, APidThatIsNotTheDaemonIsRefused) {
  // The pid file names a live process that is not `criu lazy-pages` (this test): never adopted.
  auto d = LazyPagesDaemon::start(script("criu", "echo $PPID > \"${10}\""), dir_, dir_);
  ASSERT_FALSE(d);
  EXPECT_NE(d.error().message().find("ended at once"), std::string::npos) << d.error().message();
}

// A stand-in for `criu lazy-pages --daemon`: binds the socket, leaves a process whose
// command line names lazy-pages and the work dir, writes its pid, returns.
constexpr const char* kFakeCriu = R"(
if [ "$1" = serve ]; then while :; do sleep 0.1; done; fi
python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$5/lazy-pages.socket"
"$0" serve "$@" </dev/null >/dev/null 2>&1 &
echo $! > "${10}")";

bool gone(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  return text.empty() || text.find(") Z") != std::string::npos;
}

bool wait_gone(pid_t pid) {
  for (int i = 0; i < 100 && !gone(pid); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  return gone(pid);
}

pid_t daemon_pid(const std::string& work) {
  auto text = read_file(work + "/lazy-pages.pid");
  return text ? static_cast<pid_t>(std::atol(text->c_str())) : 0;
}

TEST_F(LazyPagesDaemonTest, FailedLazyRestoreKillsTheDaemonAndFallsBack) {
  // runc that refuses --lazy-pages and accepts everything else, recording each call.
  std::string calls = dir_ + "/calls";
  std::string runc = script(
      "runc", "echo \"$*\" >> " + calls + "; case \"$*\" in *--lazy-pages*) exit 1;; esac; exit 0");
  std::string work = dir_ + "/work";
  ASSERT_EQ(::mkdir(work.c_str(), 0700), 0);
  RuncClient client(runc, dir_ + "/root");
  auto mode = restore_maybe_lazily(client, script("criu", kFakeCriu), "c1", dir_ + "/images", work,
                                   {"--bundle", dir_}, "", true);
  ASSERT_TRUE(mode) << mode.error().message();
  EXPECT_FALSE(mode->lazy);
  EXPECT_NE(mode->lazy_failure.find("runc restore c1"), std::string::npos) << mode->lazy_failure;
  pid_t pid = daemon_pid(work + "/lazy");
  ASSERT_GT(pid, 1);
  EXPECT_TRUE(wait_gone(pid)) << "the lazy-pages daemon outlived the failed restore";
  auto text = read_file(calls);
  ASSERT_TRUE(text);
  std::istringstream lines(*text);
  std::string restore_lazy, del, restore_plain;
  std::getline(lines, restore_lazy);
  std::getline(lines, del);
  std::getline(lines, restore_plain);
  EXPECT_NE(restore_lazy.find("--lazy-pages"), std::string::npos) << *text;
  EXPECT_NE(restore_lazy.find("--work-path " + work + "/lazy"), std::string::npos) << *text;
  EXPECT_NE(del.find("delete --force c1"), std::string::npos) << *text;
  EXPECT_EQ(restore_plain.find("--lazy-pages"), std::string::npos) << *text;
  EXPECT_NE(restore_plain.find("--work-path " + work + " "), std::string::npos) << *text;
}

TEST_F(LazyPagesDaemonTest, SuccessfulLazyRestoreLeavesTheDaemonServing) {
  std::string runc = script("runc", "exit 0");
  std::string work = dir_ + "/work";
  ASSERT_EQ(::mkdir(work.c_str(), 0700), 0);
  RuncClient client(runc, dir_ + "/root");
  auto mode = restore_maybe_lazily(client, script("criu", kFakeCriu), "c1", dir_ + "/images", work,
                                   {}, "", true);
  ASSERT_TRUE(mode) << mode.error().message();
  EXPECT_TRUE(mode->lazy);
  EXPECT_TRUE(mode->lazy_failure.empty());
  pid_t pid = daemon_pid(work + "/lazy");
  ASSERT_GT(pid, 1);
  EXPECT_FALSE(gone(pid)) << "a released daemon must go on serving pages";
  ::kill(pid, SIGKILL);
  EXPECT_TRUE(wait_gone(pid));
}

TEST_F(LazyPagesDaemonTest, PlainRestoreStartsNoDaemon) {
  std::string runc = script("runc", "exit 0");
  std::string work = dir_ + "/work";
  ASSERT_EQ(::mkdir(work.c_str(), 0700), 0);
  RuncClient client(runc, dir_ + "/root");
  auto mode = restore_maybe_lazily(client, script("criu", "exit 9"), "c1", dir_ + "/images", work,
                                   {}, "", false);
  ASSERT_TRUE(mode) << mode.error().message();
  EXPECT_FALSE(mode->lazy);
  struct stat st {};
  EXPECT_NE(::stat((work + "/lazy").c_str(), &st), 0);
}

TEST_F(LazyPagesDaemonTest, CheckpointWaitsForTheDaemon) {
  std::string bundle = dir_ + "/bundle";
  std::string work = lazy_work_dir(bundle);
  ASSERT_EQ(std::system(("mkdir -p " + work).c_str()), 0);
  EXPECT_TRUE(wait_for_lazy_pages(bundle, std::chrono::milliseconds(10)));  // None yet.
  auto d = LazyPagesDaemon::start(script("criu", kFakeCriu), dir_, work);
  ASSERT_TRUE(d) << d.error().message();
  pid_t pid = d->pid();
  d->release();
  auto waited = wait_for_lazy_pages(bundle, std::chrono::milliseconds(200));
  ASSERT_FALSE(waited);
  EXPECT_NE(waited.error().message().find("still putting"), std::string::npos);
  std::thread killer([pid] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ::kill(pid, SIGKILL);
  });
  EXPECT_TRUE(wait_for_lazy_pages(bundle, std::chrono::seconds(10)));
  killer.join();
}

}  // namespace
}  // namespace arch
