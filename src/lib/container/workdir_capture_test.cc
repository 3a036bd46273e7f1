// Tests for the work directory's capture and put-back (workdir_capture.h).
#include "container/workdir_capture.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "base/file_util.h"
#include "base/temp_dir.h"

namespace arch {
namespace {

namespace fs = std::filesystem;

void write(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

std::string slurp(const std::string& path) {
  auto t = read_file(path);
  return t ? *t : "<missing>";
}

struct Fixture {
  TempDir tmp{"arch-workdir-"};
  std::string work = tmp / "work";
  std::string tar = tmp / "workdir.tar";
  Fixture() {
    fs::create_directories(work + "/out/deep");
    write(work + "/ledger.txt", "1\n2\n3\n");
    write(work + "/out/deep/result", "partial");
    fs::create_symlink("ledger.txt", work + "/latest");
  }
  Result<std::string> put_back(const nlohmann::json& record) {
    auto fd = open_file(tar, O_RDONLY);
    if (!fd) return std::unexpected(fd.error());
    return put_back_workdir(work, record, fd->get(), ExpansionLimits{});
  }
};

TEST(WorkdirCapture, PutsBackWhatTheJobWroteAfterTheCheckpoint) {
  Fixture f;
  auto record = capture_workdir(f.work, 1 << 20, f.tar);
  ASSERT_TRUE(record) << record.error().message();
  ASSERT_TRUE(record->value("captured", false)) << record->dump();
  EXPECT_EQ(record->value("file", ""), kWorkdirFile);
  EXPECT_EQ(record->value("fingerprint", "").size(), 64u);
  // The job went on after the checkpoint: appended, added, removed, replaced a link.
  write(f.work + "/ledger.txt", "1\n2\n3\n4\n5\n");
  write(f.work + "/new-output", "written after");
  fs::remove_all(f.work + "/out");
  fs::remove(f.work + "/latest");
  fs::create_symlink("/etc", f.work + "/latest");
  auto note = f.put_back(*record);
  ASSERT_TRUE(note) << note.error().message();
  EXPECT_NE(note->find("put back"), std::string::npos) << *note;
  EXPECT_EQ(slurp(f.work + "/ledger.txt"), "1\n2\n3\n");
  EXPECT_EQ(slurp(f.work + "/out/deep/result"), "partial");
  EXPECT_FALSE(fs::exists(fs::symlink_status(f.work + "/new-output")));
  EXPECT_EQ(fs::read_symlink(f.work + "/latest"), "ledger.txt");
  // Put back, it matches its fingerprint again: a second restore has nothing to do.
  auto again = f.put_back(*record);
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_EQ(*again, "");
}

TEST(WorkdirCapture, UnchangedDirectoryIsLeftAlone) {
  Fixture f;
  auto record = capture_workdir(f.work, 1 << 20, f.tar);
  ASSERT_TRUE(record && record->value("captured", false));
  struct stat before {};
  ASSERT_EQ(::stat((f.work + "/ledger.txt").c_str(), &before), 0);
  auto note = f.put_back(*record);
  ASSERT_TRUE(note) << note.error().message();
  EXPECT_EQ(*note, "");
  struct stat after {};
  ASSERT_EQ(::stat((f.work + "/ledger.txt").c_str(), &after), 0);
  EXPECT_EQ(before.st_ino, after.st_ino) << "not rewritten";
}

TEST(WorkdirCapture, TooBigIsNotCapturedAndSaysWhy) {
  Fixture f;
  write(f.work + "/big", std::string(4096, 'x'));
  auto record = capture_workdir(f.work, 1024, f.tar);
  ASSERT_TRUE(record) << record.error().message();
  EXPECT_FALSE(record->value("captured", true));
  EXPECT_NE(record->value("reason", "").find("more than 1024 bytes"), std::string::npos)
      << record->dump();
  EXPECT_FALSE(fs::exists(f.tar)) << "no capture file when not captured";
  // A restore from such a generation leaves the directory as it finds it.
  write(f.work + "/ledger.txt", "changed");
  auto note = put_back_workdir(f.work, *record, -1, ExpansionLimits{});
  ASSERT_TRUE(note) << note.error().message();
  EXPECT_EQ(*note, "");
  EXPECT_EQ(slurp(f.work + "/ledger.txt"), "changed");
}

TEST(WorkdirCapture, AttackLinksPlantedAfterTheCheckpointLeadNowhere) {
  // The tenant replaces a captured directory by a symlink to a host directory before the
  // restore: the put-back removes the link and remakes the directory; the host directory
  // is neither emptied nor written.
  Fixture f;
  TempDir host{"arch-host-"};
  write((host / "precious"), "host data");
  auto record = capture_workdir(f.work, 1 << 20, f.tar);
  ASSERT_TRUE(record && record->value("captured", false));
  fs::remove_all(f.work + "/out");
  fs::create_directory_symlink(host.path(), f.work + "/out");
  auto note = f.put_back(*record);
  ASSERT_TRUE(note) << note.error().message();
  EXPECT_EQ(slurp((host / "precious")), "host data");
  EXPECT_FALSE(fs::exists((host / "deep")));
  EXPECT_TRUE(fs::is_directory(fs::symlink_status(f.work + "/out")));
  EXPECT_EQ(slurp(f.work + "/out/deep/result"), "partial");
}

TEST(WorkdirCapture, AttackRecordThatDoesNotMatchItsCaptureIsBounded) {
  // A record whose counts are smaller than the capture (a forged or damaged manifest would
  // not verify, but the applier holds the line anyway): the put-back stops with EFBIG.
  Fixture f;
  auto record = capture_workdir(f.work, 1 << 20, f.tar);
  ASSERT_TRUE(record && record->value("captured", false));
  write(f.work + "/ledger.txt", "changed");
  (*record)["bytes"] = uint64_t{2};
  auto note = f.put_back(*record);
  ASSERT_FALSE(note);
  EXPECT_EQ(note.error().code(), EFBIG) << note.error().message();
}

TEST(WorkdirCapture, MalformedRecordIsAnError) {
  Fixture f;
  nlohmann::json record = {{"captured", true}, {"fingerprint", 7}};
  auto note = put_back_workdir(f.work, record, -1, ExpansionLimits{});
  ASSERT_FALSE(note);
  EXPECT_NE(note.error().message().find("malformed"), std::string::npos);
}

}  // namespace
}  // namespace arch
