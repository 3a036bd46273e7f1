// Tests for CriuErrors over CRIU's own logs: each excerpt below is the end of a real
// `criu dump -v4` log made on the build machine (CRIU 4.2.1, Linux 6.18) with the workload
// named in its comment (paths shortened); the last three are lines quoted in issue 13 from
// other CRIU versions and runs.
#include "criu/criu_errors.h"

#include <gtest/gtest.h>

#include <set>

namespace arch {
namespace {

struct Excerpt {
  const char* name;
  const char* id;
  const char* log;
};

const Excerpt kExcerpts[] = {
    // flock(2) lock held, dumped without --file-locks
    {"flock", "file-locks",
     R"log((00.603182) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted
(00.752050) Dumping path for -3 fd via self 16 [/]
(00.752056) Dumping task cwd id 0x8 root id 0x9
(00.752143) Dumping file-locks
(00.752145) Error (criu/file-lock.c:110): Some file locks are hold by dumping tasks! You can try --file-locks to dump them.
(00.752211) net: Unlock network
(00.752217) Unfreezing tasks into 1
(00.752219) 	Unseizing 13141 into 1
(00.761637) Error (criu/cr-dump.c:1975): Dumping FAILED.
)log"},
    // POSIX fcntl lock held, dumped without --file-locks
    {"posix", "file-locks",
     R"log((00.616273) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted
(00.693965) Dumping path for -3 fd via self 16 [/]
(00.693971) Dumping task cwd id 0x8 root id 0x9
(00.694042) Dumping file-locks
(00.694045) Error (criu/file-lock.c:110): Some file locks are hold by dumping tasks! You can try --file-locks to dump them.
(00.694109) net: Unlock network
(00.694114) Unfreezing tasks into 1
(00.694116) 	Unseizing 13304 into 1
(00.694205) Error (criu/cr-dump.c:1975): Dumping FAILED.
)log"},
    // an 8 MiB deleted-open file with CRIU's default 1 MiB ghost limit
    {"ghost", "ghost-limit",
     R"log((00.620847) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted
(00.737580) Dumping path for 3 fd via self 18 [/tmp/t/ghost/gh (deleted)]
(00.737582) Strip ' (deleted)' tag from './tmp/t/ghost/gh (deleted)'
(00.737585) Dumping ghost file for fd 18 id 0x4
(00.737587) Error (criu/files-reg.c:1031): Can't dump ghost file /tmp/t/ghost/gh of 8388608 size, increase limit
(00.737598) ----------------------------------------
(00.737622) Error (criu/cr-dump.c:1545): Dump files (pid: 13482) failed with -1
(00.739193) Waiting for 13482 to trap
(00.739209) Daemon 13482 exited trapping
)log"},
    // io_uring_setup(2) ring kept open (Linux 6.18 refuses to pass it)
    {"iouring", "fd-not-passable",
     R"log((00.633372) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted
(00.694823) ----------------------------------------
(00.694844) Sent msg to daemon 71 0 0
pie: 13779: __fetched msg: 71 0 0
pie: 13779: Error (criu/pie/parasite.c:588): send_fds failed (-22)
pie: 13779: __sent ack msg: 71 71 -22
pie: 13779: Close the control socket for writing
pie: 13779: Daemon waits for command
(00.694947) Error (criu/parasite-syscall.c:280): Can't retrieve FDs from socket
)log"},
    // an established TCP pair over loopback
    {"tcp", "tcp-established",
     R"log((01.074639) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted
(01.195545) inet: 	Dumped: family AF_INET    type SOCK_STREAM    proto IPPROTO_TCP      port 53357 state 0                src_addr 127.0.0.1
(01.195580) 15972 fdinfo 4: pos:                0 flags:                2/0x1
(01.195588) sockets: Searching for socket 0x15d406 family 2
(01.195590) Error (criu/sk-inet.c:200): inet: Connected TCP socket, consider using --tcp-established option.
(01.195603) ----------------------------------------
(01.195635) Error (criu/cr-dump.c:1545): Dump files (pid: 15972) failed with -1
(01.195646) Waiting for 15972 to trap
(01.197467) Daemon 15972 exited trapping
)log"},
    // connected to a unix socket of a process outside the tree
    {"extunix", "external-unix-socket",
     R"log((00.406174) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted
(00.665143) unix: 	Dumping extern: ino 1443941 peer_ino 1444063 family    1 type    1 state  1 name /tmp/t/srv.sock
(00.665148) unix: 	Dumped extern: id 0x10 ino 1443941 peer 0 type 2 state 10 name 24 bytes
(00.665151) unix: 	Runaway socket: ino 1443941 peer_ino 1444063 family    1 type    1 state  1 name /tmp/t/srv.sock
(00.665153) Error (criu/sk-unix.c:874): unix: External socket is used. Consider using --ext-unix-sk option.
(00.665226) net: Unlock network
(00.665231) Unfreezing tasks into 1
(00.665234) 	Unseizing 20129 into 1
(00.665268) Error (criu/cr-dump.c:1975): Dumping FAILED.
)log"},
    // a process running as uid 1000, root without CAP_SYS_RESOURCE
    {"rlimit", "rlimit-permission",
     R"log((00.771281) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted
(00.878267) 	dumping 0 nice for 18031
(00.878272) dumping /proc/18031/loginuid
(00.878286) dumping /proc/18031/oom_score_adj
(00.878303) Error (criu/cr-dump.c:389): Can't get rlimit 0: Operation not permitted
(00.878306) ----------------------------------------
(00.878308) Error (criu/cr-dump.c:1584): Dump core (pid: 18031) failed with -1
(00.878335) Waiting for 18031 to trap
(00.878341) Daemon 18031 exited trapping
)log"},
    // a process whose terminal is a pty slave with the master outside the tree
    {"tty", "tty",
     R"log((00.850361) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted
(01.006239) ----------------------------------------
(01.006356) cg: All tasks in criu's cgroups. Nothing to dump.
(01.006360) unix: Dumping external sockets
(01.006382) Error (criu/tty.c:410): tty: Found slave peer index 0 without correspond master peer
(01.006458) net: Unlock network
(01.006468) Unfreezing tasks into 1
(01.006471) 	Unseizing 20933 into 1
(01.012789) Error (criu/cr-dump.c:1975): Dumping FAILED.
)log"},
    // an AF_VSOCK socket
    {"vsock", "unsupported-socket",
     R"log((00.662086) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted
(00.751184) Only file size could be stored for validation for file /tmp/t/vsock/out
(00.751205) 24315 fdinfo 2: pos:                0 flags:           100001/0
(00.751239) 24315 fdinfo 3: pos:                0 flags:                2/0x1
(00.751246) Error (criu/sockets.c:767): sockets: BUG! Unknown socket collected (family 40)
(00.751257) ----------------------------------------
(00.751283) Error (criu/cr-dump.c:1545): Dump files (pid: 24315) failed with -1
(00.753044) Waiting for 24315 to trap
(00.753071) Daemon 24315 exited trapping
)log"},
    // pre-dump on a kernel without soft-dirty tracking (criu pre-dump aborts)
    {"predump", "dirty-tracking",
     R"log((00.991943) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted
(01.027538) Error (criu/mem.c:46): BUG at criu/mem.c:46
)log"},
    // dump --track-mem on the same kernel
    {"trackmem", "dirty-tracking",
     R"log((00.506091) Error (criu/config.c:1131): Tracking memory is not available. Consider omitting --track-mem option.
)log"},
    // quoted in issue 13: CRIU 4.1.1 on Linux >= 6.16 with any INET socket
    {"oldcriu", "criu-too-old-for-sockets",
     R"log((00.5) Error (criu/sockets.c:561): sockets: Can't get 1:16 opt: Operation not supported
(00.6) Error (criu/cr-dump.c:1975): Dumping FAILED.
)log"},
    // quoted in issue 13: fio's ring where the kernel still passed it
    {"uring-shit", "io-uring",
     R"log((00.4) Error (criu/files.c:545): Unknown shit 600 (anon_inode:[io_uring])
)log"},
    // quoted in issue 13: a pipeline frozen with a task in D state
    {"seize", "unseizable-task",
     R"log((10.1) Error (criu/seize.c:711): Timeout reached. Try to interrupt: 0
(10.1) Error (criu/seize.c:643): Unseizable non-zombie 4242 found, state D, err 0/0
)log"},
};

TEST(CriuErrors, EveryRealLogMapsToItsSentence) {
  for (const auto& e : kExcerpts) {
    auto got = explain_criu_log(e.log);
    ASSERT_TRUE(got.has_value()) << e.name;
    EXPECT_EQ(got->id, e.id) << e.name << ": matched " << got->line;
    EXPECT_FALSE(got->sentence.empty());
    EXPECT_TRUE(is_criu_error_line(got->line)) << got->line;
  }
}

TEST(CriuErrors, SentencesSayWhatToDo) {
  std::set<std::string_view> ids;
  for (const auto& rule : criu_error_rules()) {
    EXPECT_TRUE(ids.insert(rule.id).second) << "duplicate id " << rule.id;
    EXPECT_NE(rule.sentence.find(": "), std::string_view::npos)
        << rule.id << ": a sentence says what happened, then what to do";
    EXPECT_EQ(rule.sentence.back(), '.') << rule.id;
    EXPECT_FALSE(rule.all.empty() && rule.any.empty()) << rule.id << " matches everything";
  }
}

TEST(CriuErrors, TheHarmlessRlimitLineAloneIsNoKnownFailure) {
  const char* log =
      R"log((00.6) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted
(00.7) Error (criu/cr-dump.c:1975): Dumping FAILED.
)log";
  EXPECT_FALSE(explain_criu_log(log).has_value());
  EXPECT_FALSE(is_criu_error_line(
      "(00.6) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: x"));
}

TEST(CriuErrors, DebugLinesThatNameLocksOrSocketsDoNotMatch) {
  // Lines CRIU writes on every successful dump: none is an error line.
  const char* log = R"log((00.75) Dumping file-locks
(01.19) inet: 	Dumped: family AF_INET    type SOCK_STREAM    proto IPPROTO_TCP
(01.00) unix: Dumping external sockets
(01.2) Dumping ghost file for fd 18 id 0x4
(01.3) Writing stats
)log";
  EXPECT_FALSE(explain_criu_log(log).has_value());
  EXPECT_TRUE(criu_error_lines(log).empty());
}

TEST(CriuErrors, ErrorLinesAreTheLastOnes) {
  std::string log;
  for (int i = 0; i < 30; ++i)
    log += "(0." + std::to_string(i) + ") Error (x.c:1): n" + std::to_string(i) + "\n";
  auto lines = criu_error_lines(log, 5);
  ASSERT_EQ(lines.size(), 5u);
  EXPECT_NE(lines.front().find("n25"), std::string::npos);
  EXPECT_NE(lines.back().find("n29"), std::string::npos);
}

TEST(CriuErrors, RuncMessagesAreReadWhole) {
  // runc's own error when CRIU could not even write its log (a full store).
  std::string runc = "runc checkpoint c1: write /s/criu/dump.log: no space left on device";
  EXPECT_EQ(explain_criu_log(runc, false)->id, "no-space");
  EXPECT_FALSE(explain_criu_log("runc checkpoint c1: exit status 1", false).has_value());
  auto got = explain_criu_log(runc, false);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->id, "no-space");
  EXPECT_FALSE(explain_criu_log(runc).has_value());  // not a CRIU error line
}

TEST(CriuErrors, CrlfAndNoTrailingNewline) {
  auto got = explain_criu_log(
      "(0.1) x\r\n(0.2) Error (criu/sk-unix.c:874): unix: External socket is used. Consider");
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->id, "external-unix-socket");
}

}  // namespace
}  // namespace arch
