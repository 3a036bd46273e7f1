// Tests for TcpPolicy: strict names, /proc/net/tcp parsing, the restore-or-close decision.
#include "container/tcp_policy.h"

#include <gtest/gtest.h>

namespace arch {
namespace {

TEST(TcpPolicy, AcceptsExactlyTheFourNames) {
  for (const char* name : {"auto", "restore", "close", "fail"}) {
    auto p = parse_tcp_policy(name);
    ASSERT_TRUE(p) << name;
    EXPECT_EQ(tcp_policy_name(*p), name);
  }
  for (const char* bad : {"", "AUTO", " auto", "auto ", "close\ntcp-close", "tcp-close",
                          "restore --action-script=/bin/sh", "fail;x"}) {
    EXPECT_FALSE(parse_tcp_policy(bad)) << bad;
  }
}

TEST(TcpPolicy, ContainerValueWinsAndIsStrict) {
  EXPECT_EQ(*container_tcp_policy("close", ""), TcpPolicy::kClose);
  EXPECT_EQ(*container_tcp_policy("close", "restore"), TcpPolicy::kRestore);
  EXPECT_FALSE(container_tcp_policy("auto", "close\nexec-cmd"));
  EXPECT_EQ(*container_tcp_policy("", ""), TcpPolicy::kAuto);
}

constexpr const char* kTcp4 =
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
    "timeout inode\n"
    "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        "
    "0 111 1 0000000000000000 100 0 0 10 0\n"
    "   1: 0264640A:C350 0164640A:2328 01 00000000:00000000 00:00000000 00000000     0        "
    "0 222 1 0000000000000000 20 4 30 10 -1\n"
    "   2: 0264640A:C351 0164640A:2328 01 00000000:00000000 00:00000000 00000000     0        "
    "0 333 1 0000000000000000 20 4 30 10 -1\n";

TEST(TcpPolicy, ParsesTheContainersConnectionsOnly) {
  auto conns = parse_proc_net_tcp(kTcp4, false, {111, 222});
  ASSERT_EQ(conns.size(), 1u);  // 111 listens, 333 is not the container's
  EXPECT_EQ(conns[0].local, "10.100.100.2:50000");
  EXPECT_EQ(conns[0].remote, "10.100.100.1:9000");
  EXPECT_EQ(conns[0].local_ip(), "10.100.100.2");
}

TEST(TcpPolicy, ParsesIpv6) {
  std::string v6 =
      "  sl  local_address                         remote_address                        st\n"
      "   0: 00000000000000000000000001000000:1F90 00000000000000000000000001000000:C350 01 "
      "00000000:00000000 00:00000000 00000000     0        0 444 1\n";
  auto conns = parse_proc_net_tcp(v6, true, {444});
  ASSERT_EQ(conns.size(), 1u);
  EXPECT_EQ(conns[0].local, "[::1]:8080");
  EXPECT_TRUE(is_loopback_ip(conns[0].remote_ip()));
}

TEST(TcpPolicy, AutoRestoresOnlyWhereTheConnectionCanLive) {
  std::vector<TcpEndpoint> out = {{"10.0.0.2:5000", "10.0.0.1:9000"}};
  EXPECT_TRUE(decide_tcp(TcpPolicy::kAuto, out, true, {"10.0.0.2"}).restore);
  EXPECT_FALSE(decide_tcp(TcpPolicy::kAuto, out, true, {"10.0.0.3"}).restore);
  EXPECT_FALSE(decide_tcp(TcpPolicy::kAuto, out, false, {"10.0.0.2"}).restore);
  std::vector<TcpEndpoint> loop = {{"127.0.0.1:5000", "127.0.0.1:9000"}};
  EXPECT_TRUE(decide_tcp(TcpPolicy::kAuto, loop, false, {"127.0.0.1"}).restore);
  EXPECT_TRUE(decide_tcp(TcpPolicy::kRestore, out, false, {}).restore);
  EXPECT_FALSE(decide_tcp(TcpPolicy::kClose, loop, true, {"127.0.0.1"}).restore);
}

}  // namespace
}  // namespace arch
