// Tests for CriuReport: which trial records are trusted, staleness, and the text archctl
// prints from a report.
#include "criu/criu_report.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "base/temp_dir.h"

namespace arch {
namespace {

const char* kRecord =
    R"({"criu": "/opt/criu", "version": "4.2.1", "kernel": "6.18.0", "time": "2026-12-06T10:00:00Z",
        "passed": false, "checks": {"listen": true, "established": false, "unix": true}})";

std::string write_record(const TempDir& dir, const std::string& text, mode_t mode) {
  std::string path = dir.path() + "/trial.json";
  std::ofstream(path) << text;
  ::chmod(path.c_str(), mode);
  return path;
}

TEST(CriuReport, MissingRecordSaysSo) {
  TempDir dir;
  auto t = read_criu_trial(dir.path() + "/none.json", "/opt/criu", "6.18.0");
  EXPECT_FALSE(t["trusted"].get<bool>());
  EXPECT_NE(t["why"].get<std::string>().find("no trial recorded"), std::string::npos);
}

TEST(CriuReport, OnlyARootOwnedUnwritableRecordIsTrusted) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (the record must be root-owned)";
  TempDir dir;
  auto path = write_record(dir, kRecord, 0666);
  EXPECT_FALSE(read_criu_trial(path, "/opt/criu", "6.18.0")["trusted"].get<bool>());
  ::chmod(path.c_str(), 0644);
  auto t = read_criu_trial(path, "/opt/criu", "6.18.0");
  ASSERT_TRUE(t["trusted"].get<bool>()) << t.dump();
  EXPECT_FALSE(t["stale"].get<bool>());
  EXPECT_TRUE(t["checks"]["listen"].get<bool>());
  EXPECT_FALSE(t["checks"]["established"].get<bool>());
  ASSERT_EQ(::chown(path.c_str(), 1000, 1000), 0);
  EXPECT_FALSE(read_criu_trial(path, "/opt/criu", "6.18.0")["trusted"].get<bool>());
}

TEST(CriuReport, AnotherCriuOrKernelMakesItStale) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (the record must be root-owned)";
  TempDir dir;
  auto path = write_record(dir, kRecord, 0644);
  EXPECT_TRUE(read_criu_trial(path, "/usr/sbin/criu", "6.18.0")["stale"].get<bool>());
  EXPECT_TRUE(read_criu_trial(path, "/opt/criu", "6.19.0")["stale"].get<bool>());
  auto garbage = write_record(dir, "[1,2]", 0644);
  EXPECT_FALSE(read_criu_trial(garbage, "/opt/criu", "6.18.0")["trusted"].get<bool>());
}

TEST(CriuReport, TextNamesWhatPassedAndFailed) {
  nlohmann::json r = {
      {"path", "/opt/criu"},
      {"version", "4.2.1"},
      {"trial",
       {{"trusted", true},
        {"version", "4.2.1"},
        {"time", "2026-12-06T10:00:00Z"},
        {"stale", false},
        {"checks", {{"listen", true}, {"established", false}, {"unix", true}}}}},
      {"features",
       {{"dirty_tracking", {{"supported", false}, {"reason", "Dirty tracking is OFF."}}},
        {"lazy_pages", {{"supported", true}, {"reason", ""}}}}}};
  std::string text = criu_report_text(r);
  EXPECT_NE(text.find("/opt/criu (version 4.2.1)"), std::string::npos) << text;
  EXPECT_NE(text.find("passed: listening TCP, unix socket pair; failed: established TCP"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("no (Dirty tracking is OFF.)"), std::string::npos) << text;
  EXPECT_NE(text.find("lazy pages (userfaultfd)"), std::string::npos) << text;
}

}  // namespace
}  // namespace arch
