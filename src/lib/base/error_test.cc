// Tests for Error: kinds from errno and explicit, kept through wrap, and the message forms.
#include "base/error.h"

#include <gtest/gtest.h>

namespace arch {
namespace {

TEST(Error, KindFollowsTheSyscallsErrno) {
  EXPECT_EQ(Error("open x", ENOENT).kind(), ErrorKind::kNotFound);
  EXPECT_EQ(Error("kill 9", ESRCH).kind(), ErrorKind::kNotFound);
  EXPECT_EQ(Error("open x", EACCES).kind(), ErrorKind::kPermission);
  EXPECT_EQ(Error("mount", EPERM).kind(), ErrorKind::kPermission);
  EXPECT_EQ(Error("mkdir x", EEXIST).kind(), ErrorKind::kConflict);
  EXPECT_EQ(Error("rmdir x", EBUSY).kind(), ErrorKind::kConflict);
  EXPECT_EQ(Error("flock x", EWOULDBLOCK).kind(), ErrorKind::kConflict);
  EXPECT_EQ(Error("openat etc/passwd", ELOOP).kind(), ErrorKind::kInvalidInput);
  EXPECT_EQ(Error("ioctl", EINVAL).kind(), ErrorKind::kInvalidInput);
  EXPECT_EQ(Error("connect", ECONNREFUSED).kind(), ErrorKind::kUnavailable);
  EXPECT_EQ(Error("read", ETIMEDOUT).kind(), ErrorKind::kTimeout);
  EXPECT_EQ(Error("listxattr", ENOTSUP).kind(), ErrorKind::kUnsupported);
  EXPECT_EQ(Error("write", EIO).kind(), ErrorKind::kInternal);
  EXPECT_EQ(Error("no errno").kind(), ErrorKind::kInternal);
  EXPECT_EQ(Error().kind(), ErrorKind::kInternal);
}

TEST(Error, AnExplicitKindCarriesNoErrnoText) {
  Error e(ErrorKind::kNotFound, "no job 'x'");
  EXPECT_EQ(e.kind(), ErrorKind::kNotFound);
  EXPECT_EQ(e.code(), 0);
  EXPECT_EQ(e.message(), "no job 'x'");  // not "...: No such file or directory"
}

TEST(Error, WrapKeepsKindAndErrno) {
  Error e = Error("open /s/x", ENOENT).wrap("checkpoint").wrap("restore");
  EXPECT_EQ(e.kind(), ErrorKind::kNotFound);
  EXPECT_EQ(e.code(), ENOENT);
  EXPECT_EQ(e.text(), "restore: checkpoint: open /s/x");
  EXPECT_EQ(e.message(), "restore: checkpoint: open /s/x: No such file or directory");
  auto f = fail(ErrorKind::kConflict, "job j is busy");
  EXPECT_EQ(f.error().wrap("kill").kind(), ErrorKind::kConflict);
}

TEST(Error, WithKindOverridesOnlyTheKind) {
  Error e = Error("open /etc/arch/arch.conf", ENOENT).with_kind(ErrorKind::kInternal);
  EXPECT_EQ(e.kind(), ErrorKind::kInternal);
  EXPECT_EQ(e.code(), ENOENT);
  EXPECT_EQ(e.message(), "open /etc/arch/arch.conf: No such file or directory");
}

TEST(Error, KindsHaveNames) {
  EXPECT_EQ(name(ErrorKind::kNotFound), "not-found");
  EXPECT_EQ(name(ErrorKind::kInvalidInput), "invalid-input");
  EXPECT_EQ(name(ErrorKind::kInternal), "internal");
  EXPECT_EQ(name(static_cast<ErrorKind>(99)), "internal");  // out of range: no crash
}

}  // namespace
}  // namespace arch
