// Tests for ImdsClient's pure parts: RFC 3339 times, the two notice documents, the finalize
// deadline, and the errors poll() gives before any network I/O. The client against a
// metadata server is tested end to end in tests/e2e/test_imds.py (imds_probe vs fake_imds.py).
#include "node/imds_client.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

namespace arch {
namespace {

using std::chrono::seconds;
using std::chrono::sys_days;
using std::chrono::system_clock;
using namespace std::chrono_literals;

system_clock::time_point utc(int y, unsigned mo, unsigned d, int h, int mi, int s) {
  return sys_days{std::chrono::year{y} / std::chrono::month{mo} / std::chrono::day{d}} +
         std::chrono::hours{h} + std::chrono::minutes{mi} + seconds{s};
}

TEST(Rfc3339, ParsesUtcTimes) {
  auto t = parse_rfc3339_utc("2026-11-21T23:59:00Z");
  ASSERT_TRUE(t) << t.error().message();
  EXPECT_EQ(*t, utc(2026, 11, 21, 23, 59, 0));
  EXPECT_EQ(*parse_rfc3339_utc("1970-01-01T00:00:00Z"), system_clock::time_point{});
  EXPECT_EQ(*parse_rfc3339_utc("2024-02-29t12:00:00z"), utc(2024, 2, 29, 12, 0, 0));
}

TEST(Rfc3339, ParsesFractionsAndOffsets) {
  auto base = utc(2026, 11, 21, 23, 59, 0);
  EXPECT_EQ(*parse_rfc3339_utc("2026-11-21T23:59:00.5Z"), base + 500ms);
  EXPECT_EQ(*parse_rfc3339_utc("2026-11-21T23:59:00.123456789Z"), base + 123456789ns);
  EXPECT_EQ(*parse_rfc3339_utc("2026-11-21T23:59:00.1234567891234Z"), base + 123456789ns);
  EXPECT_EQ(*parse_rfc3339_utc("2026-11-22T01:59:00+02:00"), base);
  EXPECT_EQ(*parse_rfc3339_utc("2026-11-21T18:29:00-05:30"), base);
  EXPECT_EQ(*parse_rfc3339_utc("2026-11-21T23:59:00+00:00"), base);
}

TEST(Rfc3339, RefusesWhatIsNotATime) {
  for (const char* bad :
       {"", "2026-11-21", "2026-11-21T23:59:00", "2026-11-21 23:59:00Z", "2026-11-21T23:59Z",
        "2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z", "2025-02-29T00:00:00Z",
        "2026-11-21T24:00:00Z", "2026-11-21T23:60:00Z", "2026-11-21T23:59:61Z",
        "2026-11-21T23:59:00.Z", "2026-11-21T23:59:00ZZ", "2026-11-21T23:59:00+2:00",
        "2026-11-21T23:59:00+24:00", "2026-11-21T23:59:00Z ", "x026-11-21T23:59:00Z",
        "2026/11/21T23:59:00Z", "+026-11-21T23:59:00Z"}) {
    auto t = parse_rfc3339_utc(bad);
    ASSERT_FALSE(t) << "accepted '" << bad << "'";
    EXPECT_NE(t.error().message().find("RFC 3339"), std::string::npos);
  }
}

TEST(ImdsNotices, ParsesTheSpotInstanceAction) {
  for (const char* action : {"terminate", "stop", "hibernate"}) {
    auto n = parse_spot_instance_action(
        fmt::format(R"({{"action": "{}", "time": "2026-11-21T23:59:00Z"}})", action));
    ASSERT_TRUE(n) << n.error().message();
    EXPECT_EQ(n->kind, ImdsNotice::Kind::kSpotInterruption);
    EXPECT_EQ(n->action, action);
    EXPECT_EQ(n->time_text, "2026-11-21T23:59:00Z");
    EXPECT_EQ(n->time, utc(2026, 11, 21, 23, 59, 0));
  }
}

TEST(ImdsNotices, ParsesTheRebalanceRecommendation) {
  auto n = parse_rebalance_recommendation(R"({"noticeTime": "2026-11-21T23:50:00Z"})");
  ASSERT_TRUE(n) << n.error().message();
  EXPECT_EQ(n->kind, ImdsNotice::Kind::kRebalance);
  EXPECT_EQ(n->action, "rebalance");
  EXPECT_EQ(n->time, utc(2026, 11, 21, 23, 50, 0));
}

TEST(ImdsNotices, RefusesMalformedDocumentsWithAClearMessage) {
  struct Case {
    const char* body;
    const char* says;
  };
  for (auto [body, says] : {Case{"", "malformed JSON"}, Case{"{\"action\":", "malformed JSON"},
                            Case{"[1]", "not a JSON object"},
                            Case{R"({"time": "2026-11-21T23:59:00Z"})", "no \"action\""},
                            Case{R"({"action": "terminate"})", "no \"time\""},
                            Case{R"({"action": 3, "time": "2026-11-21T23:59:00Z"})", "\"action\""},
                            Case{R"({"action": "", "time": "2026-11-21T23:59:00Z"})", "\"action\""},
                            Case{R"({"action": "stop", "time": "tomorrow"})", "RFC 3339"}}) {
    auto n = parse_spot_instance_action(body);
    ASSERT_FALSE(n) << "accepted " << body;
    EXPECT_NE(n.error().message().find("spot instance-action: "), std::string::npos);
    EXPECT_NE(n.error().message().find(says), std::string::npos) << n.error().message();
  }
  auto r = parse_rebalance_recommendation(R"({"time": "2026-11-21T23:50:00Z"})");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("rebalance recommendation: no \"noticeTime\""),
            std::string::npos)
      << r.error().message();
}

ImdsNotice spot_at(system_clock::time_point t) {
  return ImdsNotice{ImdsNotice::Kind::kSpotInterruption, "terminate", "", t};
}

TEST(FinalizeDeadline, IsTheTimeLeftLessTheMargin) {
  auto now = utc(2026, 11, 21, 23, 57, 0);
  auto notice = spot_at(now + 120s);
  EXPECT_EQ(finalize_deadline(notice, now, 15s), 105s);
  EXPECT_EQ(finalize_deadline(notice, now, 0s), 120s);
  EXPECT_EQ(finalize_deadline(notice, now + 500ms, 15s), 104s);  // Rounded down.
  EXPECT_EQ(finalize_deadline(notice, now + 100s, 15s), 5s);     // At least the minimum.
  EXPECT_EQ(finalize_deadline(notice, now + 118s, 15s), 5s);
}

TEST(FinalizeDeadline, IsClamped) {
  auto now = utc(2026, 11, 21, 23, 0, 0);
  EXPECT_EQ(finalize_deadline(spot_at(now + 1h), now, 15s), 300s);
  EXPECT_EQ(finalize_deadline(spot_at(now - 10min), now, 15s), 5s);  // Already past.
  EXPECT_EQ(finalize_deadline(spot_at(now + 1h), now, 15s, 10s, 600s), 600s);
  EXPECT_EQ(finalize_deadline(spot_at(now), now, 15s, 10s, 600s), 10s);
}

TEST(FinalizeDeadline, RebalanceHasNoDeadline) {
  auto now = utc(2026, 11, 21, 23, 0, 0);
  ImdsNotice rebalance{ImdsNotice::Kind::kRebalance, "rebalance", "", now - 1min};
  EXPECT_EQ(finalize_deadline(rebalance, now, 15s), 300s);
}

TEST(ImdsClient, RefusesBadOptionsBeforeAnyRequest) {
  struct Case {
    ImdsOptions options;
    const char* says;
  };
  for (const auto& [options, says] :
       {Case{{"", 21600, 2000ms}, "not an http:// URL"},
        Case{{"https://169.254.169.254", 21600, 2000ms}, "not an http:// URL"},
        Case{{"http://", 21600, 2000ms}, "not an http:// URL"},
        Case{{"http://127.0.0.1:1", 0, 2000ms}, "token TTL 0 s is outside 1-21600"},
        Case{{"http://127.0.0.1:1", 21601, 2000ms}, "token TTL 21601 s"},
        Case{{"http://127.0.0.1:1", 60, 0ms}, "timeout"}}) {
    ImdsClient client(options);
    auto r = client.poll();
    ASSERT_FALSE(r) << options.endpoint;
    EXPECT_NE(r.error().message().find(says), std::string::npos) << r.error().message();
    EXPECT_EQ(client.tokens_obtained(), 0);
  }
}

}  // namespace
}  // namespace arch
