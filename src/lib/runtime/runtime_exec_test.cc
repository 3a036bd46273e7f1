// Tests for RuntimeExec's loop marker: only this process or its parent counts as a loop.
#include "runtime/runtime_exec.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

namespace arch {
namespace {

class HopMarker : public ::testing::Test {
 protected:
  void TearDown() override { ::unsetenv(kHopVariable); }
  static void set(const std::string& value) { ::setenv(kHopVariable, value.c_str(), 1); }
};

TEST_F(HopMarker, UnsetIsNoLoop) {
  ::unsetenv(kHopVariable);
  EXPECT_FALSE(is_runtime_loop());
}

TEST_F(HopMarker, ThisProcessOrItsParentIsALoop) {
  set(std::to_string(::getpid()));  // A wrapper that exec'ed arch-runc.
  EXPECT_TRUE(is_runtime_loop());
  set(std::to_string(::getppid()));  // A wrapper that ran arch-runc as its child.
  EXPECT_TRUE(is_runtime_loop());
}

TEST_F(HopMarker, AMarkerFromFurtherAwayIsNoLoop) {
  set("2147483646");  // A hook of a wrapped runc that calls the runtime again.
  EXPECT_FALSE(is_runtime_loop());
  set("1x");
  EXPECT_FALSE(is_runtime_loop());
  set("");
  EXPECT_FALSE(is_runtime_loop());
}

}  // namespace
}  // namespace arch
