// Tests for the activity log: lines, the cursor across appends, rotation, a replaced file,
// and what the reader refuses.
#include "managed/activity_log.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "base/temp_dir.h"

namespace arch {
namespace {

ActivityRecord ckpt(std::string id, std::string outcome = "ok") {
  return {.what = "checkpoint",
          .source = "archctl",
          .outcome = std::move(outcome),
          .ns = "default",
          .id = id,
          .key = id,
          .ms = 12.5,
          .bytes = 100,
          .detail = "/store/default/" + id + "/ckpt-1"};
}

TEST(ActivityLog, LineRoundTripsAndIsBounded) {
  ActivityRecord r = ckpt("a");
  r.time = 1764000000.5;
  auto parsed = parse_activity_line(activity_line(r).substr(0, activity_line(r).size() - 1));
  ASSERT_TRUE(parsed) << parsed.error().message();
  EXPECT_EQ(*parsed, r);

  r.detail = std::string(100000, '\x01');  // escapes to six bytes each
  std::string line = activity_line(r);
  EXPECT_LE(line.size(), kActivityMaxLineBytes);
  EXPECT_TRUE(parse_activity_line(line.substr(0, line.size() - 1)));
}

TEST(ActivityLog, RefusesMalformedRecords) {
  for (const char* bad : {
           "not json",
           "[1]",
           R"({"time":1,"what":"dance","source":"archctl","outcome":"ok"})",
           R"({"time":1,"what":"checkpoint","source":"archctl","outcome":"maybe"})",
           R"({"time":1,"what":"checkpoint","source":"Bad Label\"","outcome":"ok"})",
           R"({"time":1,"what":"checkpoint","source":"archctl","outcome":"ok","ms":-1})",
           R"({"time":"x","what":"checkpoint","source":"archctl","outcome":"ok"})",
           R"({"what":"checkpoint","source":"archctl","outcome":"ok"})",
       }) {
    EXPECT_FALSE(parse_activity_line(bad)) << bad;
  }
  std::string long_id(200, 'a');
  EXPECT_FALSE(parse_activity_line(
      R"({"time":1,"what":"restore","source":"create","outcome":"ok","id":")" + long_id + "\"}"));
}

TEST(ActivityLog, AFreshReaderStartsAtTheEndThenReadsEachRecordOnce) {
  TempDir dir;
  ActivityCursor cursor;
  ASSERT_TRUE(append_activity(dir.path(), ckpt("before")));
  auto first = read_activity(dir.path(), cursor);
  ASSERT_TRUE(first) << first.error().message();
  EXPECT_TRUE(first->records.empty());  // what came before archd's first pass is not counted
  EXPECT_TRUE(first->cursor.started);

  ASSERT_TRUE(append_activity(dir.path(), ckpt("one")));
  ASSERT_TRUE(append_activity(dir.path(), ckpt("two", "failed")));
  auto second = read_activity(dir.path(), first->cursor);
  ASSERT_TRUE(second);
  ASSERT_EQ(second->records.size(), 2u);
  EXPECT_EQ(second->records[0].id, "one");
  EXPECT_EQ(second->records[1].outcome, "failed");
  EXPECT_GT(second->records[0].time, 0);
  auto third = read_activity(dir.path(), second->cursor);
  ASSERT_TRUE(third);
  EXPECT_TRUE(third->records.empty());

  struct stat st {};
  ASSERT_EQ(::stat(activity_log_path(dir.path()).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST(ActivityLog, AMissingFileThenANewOneIsReadFromItsStart) {
  TempDir dir;
  auto first = read_activity(dir.path(), {});
  ASSERT_TRUE(first);
  ASSERT_TRUE(append_activity(dir.path(), ckpt("new")));
  auto second = read_activity(dir.path(), first->cursor);
  ASSERT_TRUE(second);
  ASSERT_EQ(second->records.size(), 1u);
}

TEST(ActivityLog, ReadsInBoundedChunksAndKeepsAPartialLine) {
  TempDir dir;
  auto c = read_activity(dir.path(), {})->cursor;
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(append_activity(dir.path(), ckpt(std::to_string(i))));
  {
    std::ofstream f(activity_log_path(dir.path()), std::ios::app);
    f << R"({"time":1,"what":"checkpoint")";  // a writer in the middle of its line
  }
  std::size_t seen = 0;
  for (int pass = 0; pass < 100; ++pass) {
    auto b = read_activity(dir.path(), c, 1000);
    ASSERT_TRUE(b);
    EXPECT_LE(b->records.size(), 1000u / 150);
    seen += b->records.size();
    c = b->cursor;
    if (!b->more) break;
  }
  EXPECT_EQ(seen, 20u);
  {
    std::ofstream f(activity_log_path(dir.path()), std::ios::app);
    f << R"(,"source":"archctl","outcome":"ok"})"
      << "\n";
  }
  auto last = read_activity(dir.path(), c);
  ASSERT_TRUE(last);
  EXPECT_EQ(last->records.size(), 1u);
  EXPECT_EQ(last->invalid, 0u);
}

TEST(ActivityLog, GarbageIsSkippedAndCounted) {
  TempDir dir;
  auto c = read_activity(dir.path(), {})->cursor;
  ASSERT_TRUE(append_activity(dir.path(), ckpt("a")));
  {
    std::ofstream f(activity_log_path(dir.path()), std::ios::app);
    f << "garbage\n" << std::string(300000, 'x');  // no line end in a whole chunk
  }
  auto b = read_activity(dir.path(), c);
  ASSERT_TRUE(b);
  EXPECT_EQ(b->records.size(), 1u);
  EXPECT_EQ(b->invalid, 1u);
  auto next = read_activity(dir.path(), b->cursor);
  ASSERT_TRUE(next);
  EXPECT_EQ(next->invalid, 1u);  // the oversized chunk, skipped whole
  EXPECT_GT(next->cursor.offset, b->cursor.offset);
}

TEST(ActivityLog, AFileReadToItsEndIsRotatedAndTheNextOneReadFromItsStart) {
  TempDir dir;
  auto c = read_activity(dir.path(), {})->cursor;
  ASSERT_TRUE(append_activity(dir.path(), ckpt("a")));
  auto b = read_activity(dir.path(), c, 256 << 10, /*rotate_bytes=*/10);
  ASSERT_TRUE(b);
  EXPECT_EQ(b->records.size(), 1u);
  EXPECT_NE(::access(activity_log_path(dir.path()).c_str(), F_OK), 0) << "rotated";
  ASSERT_TRUE(append_activity(dir.path(), ckpt("b")));
  auto after = read_activity(dir.path(), b->cursor, 256 << 10, 1 << 20);
  ASSERT_TRUE(after);
  ASSERT_EQ(after->records.size(), 1u);
  EXPECT_EQ(after->records[0].id, "b");
}

TEST(ActivityLog, AReplacedFileIsReadFromItsStart) {
  TempDir dir;
  auto c = read_activity(dir.path(), {})->cursor;
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(append_activity(dir.path(), ckpt("old")));
  c = read_activity(dir.path(), c)->cursor;
  ASSERT_EQ(::unlink(activity_log_path(dir.path()).c_str()), 0);  // e.g. /run emptied at boot
  ASSERT_TRUE(append_activity(dir.path(), ckpt("new")));
  auto b = read_activity(dir.path(), c);
  ASSERT_TRUE(b);
  ASSERT_EQ(b->records.size(), 1u);
  EXPECT_EQ(b->records[0].id, "new");
}

TEST(ActivityLog, RefusesAFileOthersCanWriteOrASymlink) {
  TempDir dir;
  ASSERT_TRUE(append_activity(dir.path(), ckpt("a")));
  ASSERT_EQ(::chmod(activity_log_path(dir.path()).c_str(), 0622), 0);
  EXPECT_FALSE(read_activity(dir.path(), {.started = true}));
  ASSERT_EQ(::unlink(activity_log_path(dir.path()).c_str()), 0);
  ASSERT_EQ(::symlink("/etc/passwd", activity_log_path(dir.path()).c_str()), 0);
  EXPECT_FALSE(read_activity(dir.path(), {.started = true}));
  EXPECT_FALSE(append_activity(dir.path(), ckpt("b"))) << "a writer does not follow it";
}

TEST(ActivityLog, AWriterGivesUpOnAFullFile) {
  TempDir dir;
  ASSERT_TRUE(append_activity(dir.path(), ckpt("a")));
  ASSERT_EQ(
      ::truncate(activity_log_path(dir.path()).c_str(), static_cast<off_t>(kActivityMaxFileBytes)),
      0);
  EXPECT_FALSE(append_activity(dir.path(), ckpt("b")));
}

}  // namespace
}  // namespace arch
