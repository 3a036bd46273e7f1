// Tests for RuncClient's helpers: the PATH that lets runc 1.2+ (which ignores --criu) find CRIU.
#include "runtime/runc_client.h"

#include <gtest/gtest.h>

namespace arch {
namespace {

TEST(RuncCriuPathEnv, CriuDirectoryGoesFirst) {
  EXPECT_EQ(runc_criu_path_env("/opt/arch/criu/bin/criu", "/usr/bin:/bin"),
            "PATH=/opt/arch/criu/bin:/usr/bin:/bin");
  // No PATH of ours: root's default after CRIU's directory.
  EXPECT_EQ(runc_criu_path_env("/opt/arch/criu/bin/criu", nullptr),
            "PATH=/opt/arch/criu/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
}

TEST(RuncCriuPathEnv, OnlyForAnAbsoluteFileNamedCriu) {
  EXPECT_EQ(runc_criu_path_env("", "/usr/bin"), "");
  EXPECT_EQ(runc_criu_path_env("criu", "/usr/bin"), "");
  EXPECT_EQ(runc_criu_path_env("/opt/criu-4.2", "/usr/bin"), "");  // not findable as "criu"
  EXPECT_EQ(runc_criu_path_env("/criu", "/usr/bin"), "");
}

}  // namespace
}  // namespace arch
