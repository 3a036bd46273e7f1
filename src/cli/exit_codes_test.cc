// Tests for archctl's exit-code table: every kind and archd status lands on its documented code.
#include "exit_codes.h"

#include <gtest/gtest.h>

#include <string>

namespace arch::cli {
namespace {

TEST(ExitCodes, EveryKindHasItsCode) {
  EXPECT_EQ(exit_code(ErrorKind::kInternal), 1);
  EXPECT_EQ(exit_code(ErrorKind::kUnsupported), 1);
  EXPECT_EQ(exit_code(ErrorKind::kInvalidInput), 2);
  EXPECT_EQ(exit_code(ErrorKind::kNotFound), 3);
  EXPECT_EQ(exit_code(ErrorKind::kConflict), 4);
  EXPECT_EQ(exit_code(ErrorKind::kPermission), 5);
  EXPECT_EQ(exit_code(ErrorKind::kUnavailable), 6);
  EXPECT_EQ(exit_code(ErrorKind::kTimeout), 6);
}

TEST(ExitCodes, ArchdStatusesMapBackToKinds) {
  EXPECT_EQ(exit_code(kind_of_http_status(400)), kExitUsage);
  EXPECT_EQ(exit_code(kind_of_http_status(403)), kExitPermission);
  EXPECT_EQ(exit_code(kind_of_http_status(404)), kExitNotFound);
  EXPECT_EQ(exit_code(kind_of_http_status(409)), kExitConflict);
  EXPECT_EQ(exit_code(kind_of_http_status(500)), kExitFailure);
  EXPECT_EQ(exit_code(kind_of_http_status(503)), kExitUnavailable);
  EXPECT_EQ(exit_code(kind_of_http_status(504)), kExitUnavailable);
  // Unknown statuses are failures, never success or a parser's code.
  for (long s : {0L, 302L, 418L, 599L}) EXPECT_EQ(exit_code(kind_of_http_status(s)), 1) << s;
}

TEST(ExitCodes, HelpListsEveryCode) {
  std::string help = kExitCodesHelp;
  for (int c = kExitOk; c <= kExitPartial; ++c)
    EXPECT_NE(help.find("  " + std::to_string(c) + "  "), std::string::npos) << c;
}

}  // namespace
}  // namespace arch::cli
