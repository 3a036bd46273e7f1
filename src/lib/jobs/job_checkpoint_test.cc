// Tests for JobCheckpoint without CRIU: job.json round trip and the files it refuses, the
// export directory check, the config, the dump refusing a process that is not the job's,
// and the export of a committed checkpoint.
#include "jobs/job_checkpoint.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "config/node_config.h"

namespace arch {
namespace {

namespace fs = std::filesystem;

class JobCheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/job-checkpoint-test-XXXXXX";
    root_ = ::mkdtemp(tmpl);
    config_ = {(root_ / "store").string(), 2, "/nonexistent/criu", nullptr};
  }
  void TearDown() override { fs::remove_all(root_); }

  fs::path root_;
  JobStoreConfig config_;
};

JobCheckpointFile sample_file() {
  JobCheckpointFile f;
  f.job.id = "0123456789ab";
  f.job.name = "counter";
  f.job.argv = {"/bin/sh", "-c", "true"};
  f.job.pid = 4242;
  f.job.log_key = "var/lib/arch/jobs/0123456789ab/output.log";
  f.has_job = true;
  f.shell_job = true;
  f.tcp_established = true;
  f.pids = {4242, 4243};
  f.log_key = f.job.log_key;
  return f;
}

TEST_F(JobCheckpointTest, JobFileRoundTrip) {
  auto f = sample_file();
  auto parsed = parse_job_file(job_file_json(f).dump());
  ASSERT_TRUE(parsed) << parsed.error().message();
  EXPECT_EQ(parsed->job, f.job);
  EXPECT_TRUE(parsed->has_job);
  EXPECT_TRUE(parsed->shell_job);
  EXPECT_TRUE(parsed->tcp_established);
  EXPECT_EQ(parsed->pids, f.pids);
  EXPECT_EQ(parsed->log_key, f.log_key);
}

TEST_F(JobCheckpointTest, JobFileDefaultsAndRefusals) {
  auto empty = parse_job_file("{}");
  ASSERT_TRUE(empty);
  EXPECT_FALSE(empty->has_job);
  EXPECT_FALSE(empty->shell_job);
  EXPECT_TRUE(empty->pids.empty());
  for (const char* bad :
       {"", "not json", "[1,2]", R"({"pids": "x"})", R"({"job": 7})", R"({"shell_job": "yes"})"}) {
    auto r = parse_job_file(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().kind(), ErrorKind::kInvalidInput) << bad;
    EXPECT_NE(r.error().message().find("job.json"), std::string::npos) << r.error().message();
  }
}

TEST_F(JobCheckpointTest, ExportDirMustBeAnAbsoluteDirectory) {
  EXPECT_TRUE(check_export_dir(root_.string()));
  std::ofstream(root_ / "file") << "x";
  for (std::string bad : {std::string("relative/dir"), std::string(""),
                          (root_ / "missing").string(), (root_ / "file").string()}) {
    auto r = check_export_dir(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().kind(), ErrorKind::kInvalidInput) << bad;
  }
}

TEST_F(JobCheckpointTest, ConfigFromTheNodeConfig) {
  NodeConfig node;
  node.store_path = "/srv/ckpt";
  node.keep = 5;
  node.criu = "/my/criu";
  auto c = job_store_config(node);
  EXPECT_EQ(c.store_path, "/srv/ckpt");
  EXPECT_EQ(c.keep, 5);
  EXPECT_EQ(c.criu, "/my/criu");
  node.criu.clear();
  EXPECT_FALSE(job_store_config(node).criu.empty());
}

TEST_F(JobCheckpointTest, DumpRefusesAProcessThatIsNotTheJob) {
  pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ASSERT_GT(child, 0);
  ASSERT_EQ(::waitpid(child, nullptr, 0), child);
  JobRecord gone;
  gone.id = "0123456789ab";
  gone.pid = child;
  auto r = dump_job(config_, gone, {});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind(), ErrorKind::kInvalidInput);
  EXPECT_NE(r.error().message().find("is gone"), std::string::npos) << r.error().message();
  // A live pid whose start time is not the job's: a reused pid, never dumped.
  JobRecord reused = gone;
  reused.pid = ::getpid();
  reused.start_time = 1;
  auto r2 = dump_job(config_, reused, {});
  ASSERT_FALSE(r2);
  EXPECT_EQ(r2.error().kind(), ErrorKind::kInvalidInput);
  EXPECT_FALSE(fs::exists(root_ / "store" / "jobs" / gone.id));  // nothing was staged
}

TEST_F(JobCheckpointTest, ExportNamesTheArchiveAfterTheJob) {
  fs::path ckpt = root_ / "ckpt";
  fs::create_directories(ckpt / "images");
  std::ofstream(ckpt / "images" / "core-1.img") << "core";
  // An archive starts with the checkpoint's manifest (store/checkpoint_archive.h); its contents do not
  // matter to the export.
  std::ofstream(ckpt / "manifest.json") << "{}";
  fs::create_directories(root_ / "out");
  long when = 1764979200;  // 2025-12-06T00:00:00Z
  auto e = export_job_checkpoint(ckpt.string(), (root_ / "out").string(), "counter", when,
                                 {.compress = true, .level = 1});
  ASSERT_TRUE(e) << e.error().message();
  EXPECT_EQ(e->archive, (root_ / "out" / "counter_20251206T000000Z.tar.zst").string());
  EXPECT_EQ(e->bytes, fs::file_size(e->archive));
  EXPECT_GT(e->bytes, 0u);
  auto missing =
      export_job_checkpoint(ckpt.string(), (root_ / "nowhere").string(), "counter", when, {});
  EXPECT_FALSE(missing);
}

}  // namespace
}  // namespace arch
