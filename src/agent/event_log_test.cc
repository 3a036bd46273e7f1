// Tests for archd's JSON-lines event log.
#include "event_log.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "base/file_util.h"
#include "base/temp_dir.h"

namespace arch::agent {
namespace {

TEST(EventLog, AppendsJsonLinesAndReloadsThem) {
  TempDir dir("arch-events-");
  std::string path = dir / "log/events.jsonl";
  {
    EventLog log(path);
    ASSERT_TRUE(log.open());
    auto e = log.append({.kind = "checkpoint",
                         .ns = "default",
                         .id = "a",
                         .outcome = "ok",
                         .duration_ms = 812.5,
                         .detail = "/store/default/a/ckpt-1"});
    EXPECT_EQ(e.seq, 1u);
    EXPECT_FALSE(e.time.empty());
    log.append({.kind = "drain", .outcome = "done"});
    log.append({.kind = "undrain", .outcome = "ok"});
  }
  auto text = read_file(path);
  ASSERT_TRUE(text);
  std::size_t lines = 0;
  for (char c : *text) lines += c == '\n';
  EXPECT_EQ(lines, 3u);
  auto first = nlohmann::json::parse(text->substr(0, text->find('\n')));
  for (const char* field :
       {"time", "kind", "namespace", "id", "outcome", "duration_ms", "detail"}) {
    EXPECT_TRUE(first.contains(field)) << field;
  }
  EXPECT_EQ(first["duration_ms"], 812.5);

  EventLog again(path, 2);
  ASSERT_TRUE(again.open());
  EXPECT_EQ(again.last_seq(), 3u);
  auto e = again.append({.kind = "notice", .outcome = "terminate"});
  EXPECT_EQ(e.seq, 4u);
  auto since = again.since(2, 10);
  ASSERT_EQ(since.size(), 2u);  // keeps 2 in memory: seq 3 and 4
  EXPECT_EQ(since[0].kind, "undrain");
  EXPECT_EQ(since[1].kind, "notice");
  EXPECT_EQ(again.since(3, 10).size(), 1u);
  EXPECT_EQ(again.recent(1).front().seq, 4u);
}

TEST(EventLog, TimesAreRfc3339WithMilliseconds) {
  std::string t = now_rfc3339_ms();
  ASSERT_EQ(t.size(), 24u) << t;
  EXPECT_EQ(t[10], 'T');
  EXPECT_EQ(t[19], '.');
  EXPECT_EQ(t.back(), 'Z');
}

}  // namespace
}  // namespace arch::agent
