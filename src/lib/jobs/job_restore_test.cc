// Tests for JobRestore without CRIU: a stored job checkpoint and an imported one (directory
// and archive) open into a scratch copy that goes away afterwards; damaged, foreign and
// malformed checkpoints are refused with EINVAL and leave nothing behind; pids held by a
// zombie child are freed, pids held by a live process are not; a job's checkpoints can be
// removed.
#include "jobs/job_restore.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "base/file_util.h"
#include "store/checkpoint_archive.h"
#include "store/checkpoint_store.h"
#include "store/seal.h"

namespace arch {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr const char* kId = "0123456789ab";

class JobRestoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/job-restore-test-XXXXXX";
    root_ = ::mkdtemp(tmpl);
    auto key = generate_node_key();
    ASSERT_TRUE(key);
    auto ring = std::make_shared<Keyring>();
    ring->add(*key, true);
    config_ = {(root_ / "store").string(), 2, "/nonexistent/criu", ring};
  }
  void TearDown() override { fs::remove_all(root_); }

  // A committed checkpoint of job `id` in namespace `ns`, as dump_job + commit_job_dump
  // would leave it (fake images); `job_json` replaces job.json when set.
  std::string commit(const std::string& ns, const std::string& id,
                     const std::string& job_json = "") {
    CheckpointStore store(config_.store_path, config_.keep, config_.keys);
    auto lock = store.lock(ns, id);
    EXPECT_TRUE(lock) << lock.error().message();
    auto staging = store.begin(*lock);
    EXPECT_TRUE(staging);
    fs::path dir = staging->path();
    fs::create_directories(dir / "images");
    std::ofstream(dir / "images" / "core-1.img") << "core of " << id;
    JobCheckpointFile f;
    f.job.id = id;
    f.job.name = "counter";
    f.pids = {4242};
    f.log_key = "var/log/job.log";
    std::ofstream(dir / kJobFileName) << (job_json.empty() ? job_file_json(f).dump() : job_json);
    Manifest m;
    m.ns = ns;
    m.key = id;
    auto committed = store.commit(std::move(*staging), m, *lock);
    EXPECT_TRUE(committed) << committed.error().message();
    return *committed;
  }

  // Everything left in the store's jobs namespace.
  std::vector<std::string> keys() {
    std::vector<std::string> out;
    fs::path ns = root_ / "store" / "jobs";
    if (!fs::exists(ns)) return out;
    for (const auto& e : fs::directory_iterator(ns)) out.push_back(e.path().filename());
    return out;
  }

  fs::path root_;
  JobStoreConfig config_;
};

TEST_F(JobRestoreTest, OpensTheStoredCheckpointInAScratchCopy) {
  std::string ckpt = commit("jobs", kId);
  std::string scratch;
  {
    auto src = open_stored_job(config_, kId);
    ASSERT_TRUE(src) << src.error().message();
    EXPECT_EQ(src->origin(), ckpt);
    EXPECT_EQ(src->file().job.id, kId);
    EXPECT_EQ(src->file().pids, std::vector<pid_t>{4242});
    EXPECT_EQ(src->file().log_key, "var/log/job.log");
    EXPECT_EQ(src->manifest().key, kId);
    scratch = src->dir();
    EXPECT_NE(scratch, ckpt);
    EXPECT_EQ(*read_file(scratch + "/images/core-1.img"), std::string("core of ") + kId);
    // Moved, the source still owns its copy exactly once.
    JobRestoreSource moved = std::move(*src);
    EXPECT_EQ(moved.dir(), scratch);
  }
  EXPECT_FALSE(fs::exists(scratch));  // the scratch copy went with the source
  EXPECT_TRUE(fs::exists(ckpt));      // the checkpoint stays
}

TEST_F(JobRestoreTest, NoStoredCheckpointIsENOENT) {
  auto src = open_stored_job(config_, kId);
  ASSERT_FALSE(src);
  EXPECT_EQ(src.error().kind(), ErrorKind::kNotFound);
  EXPECT_NE(src.error().message().find("has no checkpoint"), std::string::npos);
}

TEST_F(JobRestoreTest, ImportsADirectoryAndAnArchive) {
  // A checkpoint from "another node": copied out, exported, then that store is gone.
  std::string ckpt = commit("jobs", kId);
  fs::path copy = root_ / "copy";
  fs::copy(ckpt, copy, fs::copy_options::recursive);
  auto archive = export_checkpoint(ckpt, (root_ / "job.tar.zst").string(), {});
  ASSERT_TRUE(archive) << archive.error().message();
  fs::remove_all(root_ / "store");
  for (auto [path, is_archive] :
       {std::pair{copy.string(), false}, std::pair{(root_ / "job.tar.zst").string(), true}}) {
    {
      auto src = import_job(config_, path, is_archive);
      ASSERT_TRUE(src) << path << ": " << src.error().message();
      EXPECT_EQ(src->origin(), path);
      EXPECT_EQ(src->file().job.id, kId);
      EXPECT_TRUE(fs::exists(src->dir() + "/images/core-1.img"));
      ASSERT_EQ(keys().size(), 1u);
      EXPECT_EQ(keys()[0].rfind("import-", 0), 0u);
    }
    EXPECT_TRUE(keys().empty()) << "import key left behind";
  }
}

TEST_F(JobRestoreTest, RefusesWhatIsNotAGoodJobCheckpoint) {
  fs::path damaged = commit("jobs", "aaaaaaaaaaaa");
  std::ofstream(damaged / "images" / "core-1.img") << "tampered";
  fs::path foreign = commit("containers", "bbbbbbbbbbbb");
  fs::path bad_id = commit("jobs", "cccccccccccc", R"({"job": {"id": "../../etc"}})");
  fs::path no_job = commit("jobs", "dddddddddddd", R"({"pids": [1]})");
  fs::path not_json = commit("jobs", "eeeeeeeeeeee", "{not json");
  // A manifest recomputed without the node key (unsealed) or sealed with another node's key.
  fs::path unsealed = commit("jobs", "ffffffffffff");
  fs::path foreign_key = commit("jobs", "gggggggggggg");
  {
    auto m = parse_manifest(*read_file((unsealed / kManifestFileName).string()));
    ASSERT_TRUE(m);
    m->seal = {};
    ASSERT_TRUE(
        write_file_atomic((unsealed / kManifestFileName).string(), serialize_manifest(*m), 0600));
    auto other = generate_node_key();
    ASSERT_TRUE(other);
    ASSERT_TRUE(write_file_atomic((foreign_key / kManifestFileName).string(),
                                  *seal_manifest(*m, *other), 0600));
  }
  fs::path plain = root_ / "plain";
  fs::create_directories(plain);
  std::ofstream(root_ / "junk.tar.zst") << "not an archive\n";
  std::vector<std::pair<fs::path, std::string>> cases = {
      {damaged, "does not verify"},
      {unsealed, "unsealed checkpoint"},
      {foreign_key, "does not hold"},
      {foreign, "not a job checkpoint"},
      {bad_id, "bad job id"},
      {no_job, "names no job"},
      {not_json, "job.json is not JSON"},
      {plain, "not an ARCH checkpoint"},
      {root_ / "missing", "missing"},
  };
  for (const auto& [path, why] : cases) {
    auto src = import_job(config_, path, false);
    ASSERT_FALSE(src) << path;
    EXPECT_EQ(src.error().kind(), ErrorKind::kInvalidInput) << src.error().message();
    EXPECT_NE(src.error().message().find(why), std::string::npos) << src.error().message();
    EXPECT_NE(src.error().message().find(path.string()), std::string::npos)
        << src.error().message();
  }
  auto junk = import_job(config_, (root_ / "junk.tar.zst").string(), true);
  ASSERT_FALSE(junk);
  EXPECT_EQ(junk.error().kind(), ErrorKind::kInvalidInput);
  for (const auto& k : keys()) EXPECT_NE(k.rfind("import-", 0), 0u) << k << " left behind";
}

TEST_F(JobRestoreTest, RemovedCheckpointsAreGone) {
  std::string ckpt = commit("jobs", kId);
  ASSERT_TRUE(remove_job_checkpoints(config_, kId));
  EXPECT_FALSE(fs::exists(ckpt));
  EXPECT_EQ(open_stored_job(config_, kId).error().kind(), ErrorKind::kNotFound);
  EXPECT_TRUE(remove_job_checkpoints(config_, kId));  // none: nothing to do
  // A name that climbs out of the namespace is refused, not followed.
  EXPECT_FALSE(remove_job_checkpoints(config_, "../jobs"));
  EXPECT_TRUE(fs::exists(root_ / "store" / "jobs"));
}

TEST_F(JobRestoreTest, PidsToFreeAddTheRoot) {
  JobCheckpointFile f;
  f.pids = {10, 11};
  EXPECT_EQ(pids_to_free(f, 12), (std::vector<pid_t>{10, 11, 12}));
  EXPECT_EQ(pids_to_free(f, 0), (std::vector<pid_t>{10, 11}));
}

TEST_F(JobRestoreTest, WaitPidsFreeReapsZombiesAndRefusesLiveOnes) {
  pid_t zombie = ::fork();
  if (zombie == 0) ::_exit(0);
  ASSERT_GT(zombie, 0);
  auto freed = wait_pids_free({zombie}, 2s);
  ASSERT_TRUE(freed) << freed.error().message();
  EXPECT_EQ(::waitpid(zombie, nullptr, WNOHANG), -1);  // reaped by wait_pids_free
  EXPECT_EQ(errno, ECHILD);

  pid_t live = ::fork();
  if (live == 0) {
    ::pause();
    ::_exit(0);
  }
  ASSERT_GT(live, 0);
  auto busy = wait_pids_free({live}, 100ms);
  ::kill(live, SIGKILL);
  ::waitpid(live, nullptr, 0);
  ASSERT_FALSE(busy);
  EXPECT_EQ(busy.error().kind(), ErrorKind::kConflict);
  EXPECT_NE(busy.error().message().find("still runs"), std::string::npos);
}

}  // namespace
}  // namespace arch
