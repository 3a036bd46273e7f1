// Tests for CriuFeatures: the reason text of a failed `criu check --feature`, and the check
// against a stand-in CRIU binary (a shell script) for both answers.
#include "criu/criu_features.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "base/temp_dir.h"
#include "runtime/runc_client.h"

namespace arch {
namespace {

TEST(CriuFeatures, ReasonIsCriusWarningText) {
  std::string out =
      "Warn  (criu/cr-check.c:824): Dirty tracking is OFF. Memory snapshot will not work.\n";
  EXPECT_EQ(criu_check_reason(out, 1), "Dirty tracking is OFF. Memory snapshot will not work.");
  EXPECT_EQ(criu_check_reason("", 3), "criu check exited with status 3");
  EXPECT_EQ(criu_check_reason("Error (criu/a.c:1): x\nWarn (criu/b.c:2): y\n", 1), "x; y");
  // CRIU's start-up warnings on this machine are not the feature's reason.
  EXPECT_EQ(criu_check_reason("Warn  (criu/kerndat.c:1799): Hardware breakpoints don't seem to "
                              "work (status=137f)\nWarn  (criu/cr-check.c:824): Dirty tracking "
                              "is OFF.\n",
                              1),
            "Dirty tracking is OFF.");
}

// A fake criu that answers `check --feature mem_dirty_track` as told.
std::string fake_criu(const std::string& dir, bool supported) {
  std::string path = dir + (supported ? "/criu-yes" : "/criu-no");
  std::ofstream(path) << "#!/bin/sh\n[ \"$1 $2 $3\" = \"check --feature mem_dirty_track\" ] || "
                         "exit 9\n"
                      << (supported ? "exit 0\n"
                                    : "echo 'Warn  (criu/cr-check.c:824): Dirty tracking is "
                                      "OFF. Memory snapshot will not work.' >&2\nexit 1\n");
  ::chmod(path.c_str(), 0755);
  return path;
}

TEST(CriuFeatures, DirtyTrackingFollowsCriuCheck) {
  TempDir tmp("arch-criu-");
  auto yes = criu_dirty_tracking(fake_criu(tmp.path(), true));
  auto no = criu_dirty_tracking(fake_criu(tmp.path(), false));
  auto missing = criu_dirty_tracking(tmp / "nothing-here");
  EXPECT_TRUE(yes.supported);
  EXPECT_TRUE(yes.reason.empty());
  EXPECT_FALSE(no.supported);
  EXPECT_EQ(no.reason, "Dirty tracking is OFF. Memory snapshot will not work.");
  EXPECT_FALSE(missing.supported);
  EXPECT_FALSE(missing.reason.empty());
}

TEST(RuncList, ParsesStatesAndTheEmptyList) {
  auto none = parse_runc_list("null\n");
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->empty());
  auto two = parse_runc_list(
      R"([{"ociVersion":"1.0.2","id":"a","pid":12,"status":"running","bundle":"/b/a",)"
      R"("rootfs":"/b/a/rootfs","created":"2026-01-01T00:00:00Z","owner":"root"},)"
      R"({"id":"b","pid":0,"status":"stopped","bundle":"/b/b","rootfs":"/b/b/rootfs"}])");
  ASSERT_TRUE(two) << two.error().message();
  ASSERT_EQ(two->size(), 2u);
  EXPECT_EQ((*two)[0].id, "a");
  EXPECT_EQ((*two)[0].pid, 12);
  EXPECT_EQ((*two)[0].rootfs, "/b/a/rootfs");
  EXPECT_EQ((*two)[1].status, "stopped");
  EXPECT_FALSE(parse_runc_list("{}"));
  EXPECT_FALSE(parse_runc_list("[1]"));
  EXPECT_FALSE(parse_runc_list("not json"));
}

}  // namespace
}  // namespace arch
