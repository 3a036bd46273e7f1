// The release of a group's restores: every member arrives, or one fails, or time runs out.
#include "container/restore_barrier.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

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

}  // namespace
}  // namespace arch
