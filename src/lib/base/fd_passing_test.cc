// send_fd/receive_fd over a real socket pair: the descriptor works on the other side, the
// peer's close is an invalid fd, a message without a descriptor is an error.
#include "base/fd_passing.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

namespace arch {
namespace {

TEST(FdPassing, TheDescriptorWorksOnTheOtherSide) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd a(sv[0]), b(sv[1]);
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd rd(p[0]), wr(p[1]);
  ASSERT_TRUE(send_fd(a.get(), wr.get()));
  wr.reset();
  auto got = receive_fd(b.get());
  ASSERT_TRUE(got) << got.error().message();
  ASSERT_TRUE(*got);
  EXPECT_NE(::fcntl(got->get(), F_GETFD) & FD_CLOEXEC, 0);
  ASSERT_EQ(::write(got->get(), "x", 1), 1);
  char c = 0;
  ASSERT_EQ(::read(rd.get(), &c, 1), 1);
  EXPECT_EQ(c, 'x');
}

TEST(FdPassing, ClosedPeerIsAnInvalidFdAndPlainDataIsAnError) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd a(sv[0]), b(sv[1]);
  ASSERT_EQ(::write(a.get(), "y", 1), 1);  // a byte with no descriptor
  auto plain = receive_fd(b.get());
  EXPECT_FALSE(plain);
  a.reset();
  auto closed = receive_fd(b.get());
  ASSERT_TRUE(closed);
  EXPECT_FALSE(*closed);
}

}  // namespace
}  // namespace arch
