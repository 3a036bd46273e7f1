// Tests for JobRecord: JSON round trip, the jobs file's versioning, names and archive names.
#include "jobs/job_record.h"

#include <gtest/gtest.h>

namespace arch {
namespace {

JobRecord sample() {
  JobRecord r;
  r.id = "0123456789ab";
  r.name = "sim";
  r.argv = {"/usr/bin/python3", "sim.py", "--steps", "10"};
  r.env = {"PATH=/usr/bin", "X=1"};
  r.cwd = "/work";
  r.log = "/var/lib/arch/agent/jobs/0123456789ab/output.log";
  r.log_key = r.log.substr(1);
  r.pid = 4242;
  r.start_time = 99;
  r.state = job_state::kCheckpointed;
  r.exit_code = 137;
  r.exit_signal = 9;
  r.created = 1;
  r.started = 2;
  r.finished = 3;
  r.restores = 2;
  r.checkpoint = {"/store/jobs/x/ckpt-1", "2026-11-22T00:00:00Z", "/dumps/sim_1.tar.zst"};
  return r;
}

TEST(JobRecord, RoundTripsThroughTheJobsFile) {
  std::vector<JobRecord> jobs = {sample()};
  auto parsed = parse_jobs(serialize_jobs(jobs));
  ASSERT_TRUE(parsed) << parsed.error().message();
  EXPECT_EQ(*parsed, jobs);
}

TEST(JobRecord, RefusesANewerFormatAndBadText) {
  EXPECT_FALSE(parse_jobs(R"({"format_version": 99, "jobs": []})"));
  EXPECT_FALSE(parse_jobs("not json"));
  EXPECT_FALSE(parse_jobs(R"({"format_version": 1, "jobs": [{"name": "no id"}]})"));
  auto empty = parse_jobs(R"({"format_version": 1})");
  ASSERT_TRUE(empty);
  EXPECT_TRUE(empty->empty());
}

TEST(JobRecord, Alive) {
  JobRecord r;
  r.state = job_state::kRunning;
  EXPECT_TRUE(r.alive());
  r.state = job_state::kDetached;
  EXPECT_TRUE(r.alive());
  for (const char* s : {job_state::kExited, job_state::kCheckpointed, job_state::kLost}) {
    r.state = s;
    EXPECT_FALSE(r.alive()) << s;
  }
}

TEST(JobRecord, Names) {
  EXPECT_TRUE(validate_job_name("sim-1.v2_x"));
  EXPECT_FALSE(validate_job_name(""));
  EXPECT_FALSE(validate_job_name(".hidden"));
  EXPECT_FALSE(validate_job_name("-x"));
  EXPECT_FALSE(validate_job_name("a/b"));
  EXPECT_FALSE(validate_job_name(std::string(65, 'a')));
  EXPECT_EQ(default_job_name({"/usr/bin/python3", "x.py"}), "python3");
  EXPECT_EQ(default_job_name({"./my job!"}), "my-job-");
  EXPECT_EQ(default_job_name({}), "job");
  EXPECT_EQ(default_job_name({"/.."}), "job");
  std::string id = new_job_id();
  EXPECT_EQ(id.size(), 12u);
  EXPECT_NE(id, new_job_id());
}

TEST(JobRecord, ArchiveFileName) {
  EXPECT_EQ(archive_file_name("sim", 1795309200, true), "sim_20261122T010000Z.tar.zst");
  EXPECT_EQ(archive_file_name("sim", 1795309200, false), "sim_20261122T010000Z.tar");
}

}  // namespace
}  // namespace arch
