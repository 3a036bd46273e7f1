// Tests for FileLocks: fdinfo parsing, the manifest form, the check, and real locks of this
// test process read back from /proc.
#include "criu/file_locks.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

namespace arch {
namespace {

TEST(FileLocks, ParsesHoldersAndSkipsWaiters) {
  const char* info =
      "pos:\t0\nflags:\t02100002\nmnt_id:\t1234\nino:\t5678\n"
      "lock:\t1: FLOCK  ADVISORY  WRITE 13141 00:2e:12345 0 EOF\n"
      "lock:\t1: -> FLOCK  ADVISORY  WRITE 13142 00:2e:12345 0 EOF\n"
      "lock:\t2: POSIX  ADVISORY  READ 13141 00:2e:12345 10 19\n";
  auto locks = parse_fdinfo_locks(info);
  ASSERT_EQ(locks.size(), 2u);
  EXPECT_EQ(locks[0].kind, "FLOCK");
  EXPECT_EQ(locks[0].mode, "WRITE");
  EXPECT_EQ(locks[0].dev_ino, "00:2e:12345");
  EXPECT_EQ(locks[0].end, "EOF");
  EXPECT_EQ(locks[1].kind, "POSIX");
  EXPECT_EQ(locks[1].start, "10");
  EXPECT_EQ(locks[1].end, "19");
}

TEST(FileLocks, JsonRoundTripAndRefusals) {
  std::vector<HeldLock> locks = {{"FLOCK", "WRITE", "/data/lock", "0", "EOF"},
                                 {"POSIX", "READ", "/data/db", "0", "99"}};
  auto back = locks_from_json(locks_to_json(locks));
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, locks);
  EXPECT_TRUE(locks_from_json(nlohmann::json()).value().empty());
  EXPECT_FALSE(locks_from_json(nlohmann::json::object()));
  EXPECT_FALSE(locks_from_json(nlohmann::json::parse(R"([{"kind":"FLOCK"}])")));
  EXPECT_FALSE(locks_from_json(nlohmann::json::parse(R"([{"kind":1,"mode":"WRITE",
      "path":"/x","start":"0","end":"EOF"}])")));
}

TEST(FileLocks, MissingIsAMultisetDifference) {
  HeldLock a{"FLOCK", "WRITE", "/a", "0", "EOF"}, b{"POSIX", "WRITE", "/b", "0", "EOF"};
  EXPECT_TRUE(missing_locks({a, b}, {b, a}).empty());
  EXPECT_TRUE(missing_locks({}, {a}).empty());  // more held now is not a failure
  auto gone = missing_locks({a, a, b}, {a, b});
  ASSERT_EQ(gone.size(), 1u);
  EXPECT_EQ(gone[0], a);
  auto other_mode = missing_locks({a}, {{"FLOCK", "READ", "/a", "0", "EOF"}});
  ASSERT_EQ(other_mode.size(), 1u);
  EXPECT_EQ(describe(other_mode[0]), "FLOCK WRITE /a");
  EXPECT_EQ(describe(b), "POSIX WRITE /b [0-EOF]");
}

TEST(FileLocks, ReadsThisProcessesOwnLocks) {
  char dir_template[] = "/tmp/arch-locks-XXXXXX";
  ASSERT_NE(::mkdtemp(dir_template), nullptr);
  std::string dir = dir_template;
  std::string flock_path = dir + "/f", posix_path = dir + "/p";
  int f = ::open(flock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  int p = ::open(posix_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  ASSERT_GE(f, 0);
  ASSERT_GE(p, 0);
  int dup_f = ::dup(f);  // the same lock seen through a second fd: still one lock
  ASSERT_EQ(::flock(f, LOCK_EX), 0);
  struct flock fl {};
  fl.l_type = F_RDLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = 4;
  fl.l_len = 4;
  ASSERT_EQ(::fcntl(p, F_SETLK, &fl), 0);

  auto locks = locks_held_by({static_cast<int>(::getpid())});
  std::vector<HeldLock> want = {{"FLOCK", "WRITE", flock_path, "0", "EOF"},
                                {"POSIX", "READ", posix_path, "4", "7"}};
  EXPECT_TRUE(missing_locks(want, locks).empty()) << locks.size() << " locks read";
  // Only ours count: the test may inherit a locked fd from whoever started it (setup's
  // lock file under scripts/test.sh).
  std::size_t ours = 0;
  for (const auto& l : locks) ours += l.path.starts_with(dir + "/") ? 1u : 0u;
  EXPECT_EQ(ours, 2u) << locks.size() << " locks read";

  ::flock(f, LOCK_UN);
  auto after = locks_held_by({static_cast<int>(::getpid())});
  EXPECT_EQ(missing_locks(want, after).size(), 1u);
  ::close(dup_f);
  ::close(f);
  ::close(p);
  ::unlink(flock_path.c_str());
  ::unlink(posix_path.c_str());
  ::rmdir(dir.c_str());
}

}  // namespace
}  // namespace arch
