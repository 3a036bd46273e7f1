// The release of a group's restores: every member arrives, or one fails, or time runs out.
#include "container/restore_barrier.h"

#include <gtest/gtest.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "base/temp_dir.h"

namespace arch {
namespace {

GroupRecord record_in(const TempDir& tmp, std::vector<std::string> keys) {
  GroupRecord r;
  r.owner = "default";
  r.name = "g1";
  r.generation = "0123456789abcdef0123456789abcdef";
  std::string dir = tmp / "arch-group.g1";
  ::mkdir(dir.c_str(), 0700);
  r.path = dir + "/ckpt-20260101T000000.000000000Z";
  for (auto& k : keys) r.members.push_back({k, k, "ckpt-1", "00", k == "x" ? "a" : "b"});
  return r;
}

TEST(RestoreBarrier, MembersOnTwoNodesAreReleasedTogether) {
  TempDir tmp("arch-barrier-");
  auto r = record_in(tmp, {"x", "y"});
  std::string note_x, note_y;
  auto t0 = std::chrono::steady_clock::now();
  {
    std::jthread x(
        [&] { note_x = RestoreBarrier::arrive_and_wait(r, "x", std::chrono::seconds(10)); });
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // y is restored later
    note_y = RestoreBarrier::arrive_and_wait(r, "y", std::chrono::seconds(10));
  }
  EXPECT_NE(note_x.find("released together"), std::string::npos) << note_x;
  EXPECT_NE(note_y.find("released together"), std::string::npos) << note_y;
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(300));
  // The markers sit beside the group's generations, in an entry the store ignores.
  EXPECT_TRUE(std::filesystem::exists(tmp / "arch-group.g1/arrivals." + r.generation + "/x"));
}

TEST(RestoreBarrier, AFailedMemberReleasesTheOthersAtOnce) {
  TempDir tmp("arch-barrier-");
  auto r = record_in(tmp, {"x", "y"});
  std::string note;
  auto t0 = std::chrono::steady_clock::now();
  {
    std::jthread x(
        [&] { note = RestoreBarrier::arrive_and_wait(r, "x", std::chrono::seconds(30)); });
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    RestoreBarrier::mark_failed(r, "y");
  }
  EXPECT_NE(note.find("member y failed"), std::string::npos) << note;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
}

TEST(RestoreBarrier, AMemberNeverRestoredReleasesTheRestAfterTheWait) {
  TempDir tmp("arch-barrier-");
  auto r = record_in(tmp, {"x", "y"});
  auto note = RestoreBarrier::arrive_and_wait(r, "x", std::chrono::milliseconds(200));
  EXPECT_NE(note.find("in vain for y"), std::string::npos) << note;
}

TEST(RestoreBarrier, AttackAMarkerThatIsASymlinkIsNotFollowed) {
  TempDir tmp("arch-barrier-");
  auto r = record_in(tmp, {"x", "y"});
  std::string arrivals = tmp / "arch-group.g1/arrivals." + r.generation;
  ASSERT_EQ(::symlink(tmp.path().c_str(), arrivals.c_str()), 0);
  auto note = RestoreBarrier::arrive_and_wait(r, "x", std::chrono::milliseconds(100));
  EXPECT_NE(note.find("not synchronised"), std::string::npos) << note;
  EXPECT_FALSE(std::filesystem::exists(tmp / "x"));
}

// ------------------------------------------------------------------ expired holds

TEST(RestoreBarrier, ExpiredHoldRuleIsParsedFromIptablesListing) {
  std::string line =
      "-A INPUT -s 10.0.0.2/32 -d 10.0.0.1/32 -p tcp -m tcp --sport 5000 --dport 6000 -m "
      "comment --comment \"arch-group 0123456789abcdef until 1000\" -j DROP";
  auto rule = RestoreBarrier::expired_hold_rule(line, 1001);
  ASSERT_FALSE(rule.empty());
  EXPECT_EQ(rule.front(), "-D");
  EXPECT_EQ(rule[1], "INPUT");
  EXPECT_NE(std::find(rule.begin(), rule.end(), "arch-group 0123456789abcdef until 1000"),
            rule.end());
  EXPECT_EQ(rule.back(), "DROP");
  // Not expired yet, or not ours: left alone.
  EXPECT_TRUE(RestoreBarrier::expired_hold_rule(line, 1000).empty());
  for (std::string other : {
           "-A INPUT -p tcp -j DROP",
           "-P INPUT ACCEPT",
           "-A INPUT -m comment --comment \"someone else until 1\" -j DROP",
           "-A INPUT -m comment --comment \"arch-group 0123456789abcdef until 1\" -j ACCEPT",
           "-A INPUT -m comment --comment \"arch-group 0123 until 1\" -j DROP",
           "-A INPUT -m comment --comment \"arch-group 0123456789abcdeX until 1\" -j DROP",
           "-A INPUT -m comment --comment \"arch-group 0123456789abcdef until -1\" -j DROP",
           "-A INPUT -m comment --comment \"arch-group 0123456789abcdef until 1 -j DROP",
           "-A INPUT -m comment --comment \"arch-group 0123456789abcdef until "
           "99999999999999999999\" -j DROP",
       }) {
    EXPECT_TRUE(RestoreBarrier::expired_hold_rule(other, 1L << 40).empty()) << other;
  }
}

// A real iptables in a private network namespace: the expired hold goes, a live hold and a
// rule of someone else stay.
TEST(RestoreBarrier, SweepRemovesOnlyExpiredHolds) {
  const char* iptables = "/usr/sbin/iptables";
  if (::geteuid() != 0 || ::access(iptables, X_OK) != 0) GTEST_SKIP() << "needs root, iptables";
  int out[2];
  ASSERT_EQ(::pipe(out), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(out[0]);
    ::dup2(out[1], 1);
    if (::unshare(CLONE_NEWNET) != 0) ::_exit(2);
    auto add = [&](const std::string& comment, const char* port) {
      std::string cmd = std::string(iptables) + " -w 5 -I INPUT -p tcp --dport " + port +
                        " -m comment --comment '" + comment + "' -j DROP";
      return std::system(cmd.c_str()) == 0;
    };
    if (!add("arch-group 0123456789abcdef until 1000", "6001") ||
        !add("arch-group 0123456789abcdef until 9999999999", "6002") || !add("not arch", "6003")) {
      ::_exit(3);
    }
    std::size_t removed = RestoreBarrier::sweep_expired_holds(2000);
    std::string cmd = std::string(iptables) + " -w 5 -S INPUT";
    (void)std::system(cmd.c_str());
    ::_exit(removed == 1 ? 0 : 4);
  }
  ::close(out[1]);
  std::string listing;
  char buf[4096];
  for (ssize_t n; (n = ::read(out[0], buf, sizeof buf)) > 0;)
    listing.append(buf, static_cast<std::size_t>(n));
  ::close(out[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 2) GTEST_SKIP() << "no network namespace";
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status << "\n" << listing;
  EXPECT_EQ(listing.find("6001"), std::string::npos) << listing;
  EXPECT_NE(listing.find("6002"), std::string::npos) << listing;
  EXPECT_NE(listing.find("6003"), std::string::npos) << listing;
}

}  // namespace
}  // namespace arch
