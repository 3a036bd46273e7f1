// Tests for JobManager without CRIU: jobs start as our children in their own session, their
// exit statuses and logs are recorded, bad requests are refused, and the job list survives a
// restart (a job that runs on is "detached", one that ended meanwhile "lost").
#include "jobs.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "jobs/job_launch.h"

namespace arch::agent {
namespace {

using namespace std::chrono_literals;

class JobsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (std::filesystem::temp_directory_path() /
            ("arch-jobs-" + std::to_string(::getpid()) + "-" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name()))
               .string();
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    config_.store_path = dir_ + "/store";
    config_.criu = "/nonexistent/criu";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::unique_ptr<JobManager> manager() {
    auto m =
        std::make_unique<JobManager>(config_, dir_ + "/jobs", [](LogLevel, const std::string&) {});
    auto started = m->start();
    EXPECT_TRUE(started) << started.error().message();
    return m;
  }

  JobRecord wait_state(JobManager& m, const std::string& id, const std::string& state) {
    for (int i = 0; i < 500; ++i) {
      auto rec = m.get(id);
      if (rec && rec->state == state) return *rec;
      std::this_thread::sleep_for(10ms);
    }
    ADD_FAILURE() << "job " << id << " never became " << state;
    return {};
  }

  JobRunRequest sh(const std::string& script) {
    return {{"sh", "-c", script}, {"PATH=/usr/bin:/bin", "X=42"}, dir_, ""};
  }

  std::string dir_;
  NodeConfig config_;
};

TEST_F(JobsTest, RunRecordsExitStatusAndLog) {
  auto m = manager();
  auto rec = m->run(sh("echo out $X; echo err >&2; pwd; exit 3"));
  ASSERT_TRUE(rec) << rec.error().message();
  EXPECT_EQ(rec->name, "sh");
  EXPECT_GT(rec->pid, 0);
  auto done = wait_state(*m, rec->id, job_state::kExited);
  EXPECT_EQ(done.exit_code, 3);
  EXPECT_EQ(done.exit_signal, 0);
  auto log = m->read_log(rec->id, 0, 1 << 20);
  ASSERT_TRUE(log);
  EXPECT_EQ(*log, "out 42\nerr\n" + dir_ + "\n");
  auto tail = m->read_log("sh", 7, 3);  // by name, from an offset
  ASSERT_TRUE(tail);
  EXPECT_EQ(*tail, "err");
}

TEST_F(JobsTest, OwnSessionNoTerminalAndKill) {
  auto m = manager();
  auto rec = m->run(sh("exec sleep 30"));
  ASSERT_TRUE(rec);
  auto st = read_proc_stat(rec->pid);
  ASSERT_TRUE(st);
  EXPECT_EQ(st->sid, rec->pid);
  EXPECT_EQ(st->tty_nr, 0);
  EXPECT_EQ(st->ppid, ::getpid());
  auto busy = m->remove(rec->id, false);
  ASSERT_FALSE(busy);
  EXPECT_EQ(busy.error().kind(), ErrorKind::kConflict);
  ASSERT_TRUE(m->kill(rec->id, SIGTERM));
  auto done = wait_state(*m, rec->id, job_state::kExited);
  EXPECT_EQ(done.exit_signal, SIGTERM);
  EXPECT_EQ(done.exit_code, 128 + SIGTERM);
  EXPECT_FALSE(m->kill(rec->id, SIGTERM));  // not running
  ASSERT_TRUE(m->remove(rec->id, false));
  EXPECT_EQ(m->get(rec->id).error().kind(), ErrorKind::kNotFound);
}

TEST_F(JobsTest, RefusesBadRequests) {
  auto m = manager();
  EXPECT_EQ(m->run({{}, {}, dir_, ""}).error().kind(), ErrorKind::kInvalidInput);
  EXPECT_EQ(m->run({{"sh"}, {}, "relative", ""}).error().kind(), ErrorKind::kInvalidInput);
  EXPECT_EQ(m->run({{"sh"}, {"NOEQUALS"}, dir_, ""}).error().kind(), ErrorKind::kInvalidInput);
  EXPECT_EQ(m->run({{"sh"}, {}, dir_, "../bad"}).error().kind(), ErrorKind::kInvalidInput);
  auto missing = m->run({{"no-such-program-xyz"}, {"PATH=/usr/bin"}, dir_, ""});
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message().find("not found"), std::string::npos);
  std::string junk = dir_ + "/junk";
  {
    std::ofstream(junk) << "\x7f"
                           "ELF not really";
  }
  std::filesystem::permissions(junk, std::filesystem::perms::owner_all);
  auto bad_exec = m->run({{junk}, {}, dir_, ""});
  ASSERT_FALSE(bad_exec);
  EXPECT_NE(bad_exec.error().message().find("Exec format error"), std::string::npos)
      << bad_exec.error().message();
  EXPECT_TRUE(m->list().empty());
  EXPECT_EQ(m->checkpoint("nope", {}).error().kind(), ErrorKind::kNotFound);
  EXPECT_EQ(m->restore("nope", "").error().kind(), ErrorKind::kNotFound);
}

TEST_F(JobsTest, JobsSurviveARestart) {
  std::string running, ended;
  {
    auto m = manager();
    running = m->run(sh("exec sleep 30"))->id;
    ended = m->run(sh("exec sleep 30"))->id;
    m->stop();
  }
  pid_t ended_pid = 0;
  {
    auto m = manager();
    EXPECT_EQ(m->get(running)->state, job_state::kDetached);
    EXPECT_EQ(m->get(ended)->state, job_state::kDetached);
    ended_pid = m->get(ended)->pid;
    ASSERT_TRUE(m->kill(ended, SIGKILL));
    // Not reaped by the manager (it is detached): it sees the zombie and calls it lost.
    wait_state(*m, ended, job_state::kLost);
    EXPECT_EQ(m->get(ended)->exit_code, -1);
    ASSERT_TRUE(m->kill(running, SIGKILL));
    wait_state(*m, running, job_state::kLost);
    pid_t running_pid = m->get(running)->pid;
    ::waitpid(running_pid, nullptr, 0);
  }
  ::waitpid(ended_pid, nullptr, 0);
}

}  // namespace
}  // namespace arch::agent
