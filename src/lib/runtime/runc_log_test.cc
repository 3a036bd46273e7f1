// Tests for RuncLog: lines in logrus's formats, appended to the file.
#include "runtime/runc_log.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/temp_dir.h"

namespace arch {
namespace {

TEST(RuncLog, JsonLineMatchesLogrus) {
  std::string line = format_log_line(LogFormat::kJson, LogLevel::kWarn, "a \"quoted\"\nmsg", 0);
  EXPECT_EQ(line, R"({"level":"warning","msg":"a \"quoted\"\nmsg","time":"1970-01-01T00:00:00Z"})"
                  "\n");
}

TEST(RuncLog, TextLineMatchesLogrus) {
  std::string line = format_log_line(LogFormat::kText, LogLevel::kInfo, "hello world", 86400);
  EXPECT_EQ(line, "time=\"1970-01-02T00:00:00Z\" level=info msg=\"hello world\"\n");
}

TEST(RuncLog, AppendsOnlyAtOrAboveTheThreshold) {
  TempDir tmp("arch-log-");
  std::filesystem::path path = tmp / "runc.log";
  RuncLog log(path.string(), LogFormat::kJson, LogLevel::kInfo, 0600);
  log.debug("dropped");
  log.info("first");
  log.error("second");
  std::ifstream in(path);
  std::vector<nlohmann::json> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(nlohmann::json::parse(l));
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0]["msg"], "first");
  EXPECT_EQ(lines[0]["level"], "info");
  EXPECT_EQ(lines[1]["level"], "error");
  EXPECT_EQ(std::filesystem::status(path).permissions() & std::filesystem::perms::all,
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
}

TEST(RuncLog, UnwritableLogIsNotFatal) {
  RuncLog log("/nonexistent-dir/sub/x.log", LogFormat::kJson, LogLevel::kDebug, 0600);
  log.error("goes nowhere");  // Must not throw or abort the runtime call.
  EXPECT_FALSE(std::filesystem::exists("/nonexistent-dir"));
}

}  // namespace
}  // namespace arch
