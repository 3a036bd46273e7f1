// Tests for the exit-status records: round trip, init-only, atomic replacement, bad names.
#include "managed/exit_status.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include "base/file_util.h"

namespace arch {
namespace {

namespace fs = std::filesystem;

class ExitStatusTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::temp_directory_path() /
            ("arch-exits-" + std::to_string(::getpid()) + "-" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name()))
               .string();
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  static TaskExitEvent exit_of(std::string ns, std::string id, uint32_t status) {
    TaskExitEvent e;
    e.ns = std::move(ns);
    e.container_id = id;
    e.exec_id = std::move(id);
    e.pid = 4242;
    e.exit_status = status;
    e.exited_at = format_exit_time(1767323045, 123456789);
    return e;
  }

  std::string dir_;
};

TEST(ExitTime, FormatsRfc3339WithNanoseconds) {
  EXPECT_EQ(format_exit_time(0, 0), "1970-01-01T00:00:00.000000000Z");
  EXPECT_EQ(format_exit_time(1767323045, 1), "2026-01-02T03:04:05.000000001Z");
}

TEST_F(ExitStatusTest, RecordsAndReadsPerNamespace) {
  ASSERT_EQ(record_exit_status(dir_, exit_of("default", "c1", 0)), true);
  ASSERT_EQ(record_exit_status(dir_, exit_of("moby", "c1", 3)), true);
  ASSERT_EQ(record_exit_status(dir_, exit_of("k8s.io", "c2", 137)), true);

  EXPECT_EQ(read_exit_status(dir_, "default", "c1").value(), 0);
  EXPECT_EQ(read_exit_status(dir_, "moby", "c1").value(), 3);
  EXPECT_EQ(read_exit_status(dir_, "k8s.io", "c2").value(), 137);

  auto rec = read_exit_record(dir_, "moby", "c1");
  ASSERT_TRUE(rec && *rec) << (rec ? "missing" : rec.error().message());
  EXPECT_EQ((*rec)->pid, 4242u);
  EXPECT_EQ((*rec)->exited_at, "2026-01-02T03:04:05.123456789Z");
  EXPECT_EQ((*rec)->exec_id, "c1");
}

TEST_F(ExitStatusTest, UnknownIsNullopt) {
  auto none = read_exit_status(dir_, "default", "never-ran");
  ASSERT_TRUE(none) << none.error().message();
  EXPECT_FALSE(none->has_value());
}

TEST_F(ExitStatusTest, OnlyTheInitProcessCounts) {
  TaskExitEvent exec = exit_of("default", "c1", 7);
  exec.exec_id = "exec-1";
  EXPECT_EQ(record_exit_status(dir_, exec), false);
  EXPECT_FALSE(read_exit_status(dir_, "default", "c1").value().has_value());

  ASSERT_EQ(record_exit_status(dir_, exit_of("default", "c1", 0)), true);
  EXPECT_EQ(record_exit_status(dir_, exec), false);  // a later exec exit changes nothing
  EXPECT_EQ(read_exit_status(dir_, "default", "c1").value(), 0);

  TaskExitEvent no_id = exit_of("default", "c2", 5);  // an empty id means the init process
  no_id.exec_id.clear();
  EXPECT_EQ(record_exit_status(dir_, no_id), true);
  EXPECT_EQ(read_exit_status(dir_, "default", "c2").value(), 5);
}

TEST_F(ExitStatusTest, RootOnlyFilesInTheDocumentedLayout) {
  ASSERT_TRUE(record_exit_status(dir_, exit_of("k8s.io", "abc", 1)));
  struct stat st {};
  ASSERT_EQ(::stat((dir_ + "/k8s.io/abc").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  ASSERT_EQ(::stat((dir_ + "/k8s.io").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  auto text = read_file(dir_ + "/k8s.io/abc");
  ASSERT_TRUE(text);
  EXPECT_NE(text->find("\"exit_status\":1"), std::string::npos) << *text;
}

TEST_F(ExitStatusTest, ForgetRemovesTheRecord) {
  ASSERT_TRUE(record_exit_status(dir_, exit_of("default", "c1", 0)));
  ASSERT_TRUE(forget_exit_status(dir_, "default", "c1"));
  EXPECT_FALSE(read_exit_status(dir_, "default", "c1").value().has_value());
  EXPECT_TRUE(forget_exit_status(dir_, "default", "c1"));  // missing is fine
}

TEST_F(ExitStatusTest, RefusesBadNames) {
  for (const char* bad : {"..", ".", "a/b", "../x", "", "-x"}) {
    EXPECT_FALSE(record_exit_status(dir_, exit_of(bad, "c1", 0))) << bad;
    EXPECT_FALSE(record_exit_status(dir_, exit_of("default", bad, 0))) << bad;
    EXPECT_FALSE(read_exit_status(dir_, bad, "c1")) << bad;
    EXPECT_FALSE(read_exit_status(dir_, "default", bad)) << bad;
    EXPECT_FALSE(forget_exit_status(dir_, "default", bad)) << bad;
  }
  auto err = record_exit_status(dir_, exit_of("default", "../escape", 0));
  ASSERT_FALSE(err);
  EXPECT_NE(err.error().message().find("container id"), std::string::npos) << err.error().message();
  EXPECT_FALSE(fs::exists(fs::path(dir_).parent_path() / "escape"));
}

TEST_F(ExitStatusTest, MalformedRecordIsAnError) {
  fs::create_directories(dir_ + "/default");
  std::ofstream(dir_ + "/default/bad") << "{\"exit_status\":\"zero\"}";
  EXPECT_FALSE(read_exit_status(dir_, "default", "bad"));
  std::ofstream(dir_ + "/default/torn") << "{\"exit_st";
  EXPECT_FALSE(read_exit_status(dir_, "default", "torn"));
  std::ofstream(dir_ + "/default/neg") << "{\"exit_status\":-1}";
  EXPECT_FALSE(read_exit_status(dir_, "default", "neg"));
}

TEST_F(ExitStatusTest, ASymlinkIsNotFollowed) {
  fs::create_directories(dir_ + "/default");
  std::ofstream(dir_ + "/elsewhere") << "{\"exit_status\":0}";
  fs::create_symlink(dir_ + "/elsewhere", dir_ + "/default/link");
  EXPECT_FALSE(read_exit_status(dir_, "default", "link"));
}

TEST_F(ExitStatusTest, ReadersNeverSeeATornRecord) {
  // A writer replaces the record over and over while a reader reads it: every read sees
  // one of the written statuses, never an error or a partial file.
  ASSERT_TRUE(record_exit_status(dir_, exit_of("default", "c1", 0)));
  std::atomic<bool> done{false};
  std::thread writer([&] {
    for (uint32_t i = 0; i < 100; ++i)
      ASSERT_TRUE(record_exit_status(dir_, exit_of("default", "c1", i % 256)));
    done = true;
  });
  int reads = 0;
  while (!done) {
    auto status = read_exit_status(dir_, "default", "c1");
    ASSERT_TRUE(status) << status.error().message();
    ASSERT_TRUE(status->has_value());
    EXPECT_GE(**status, 0);
    EXPECT_LT(**status, 256);
    ++reads;
  }
  writer.join();
  EXPECT_GT(reads, 0);
  EXPECT_EQ(read_exit_status(dir_, "default", "c1").value(), 99);
  // No temp files are left beside the record.
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_ + "/default"), fs::directory_iterator()), 1);
}

}  // namespace
}  // namespace arch
