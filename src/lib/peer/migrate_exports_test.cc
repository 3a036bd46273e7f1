// MigrateExports: persisted page exports come back after a restart, hostile files serve
// nothing, and the post-copy judgement.
#include "peer/migrate_exports.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "base/temp_dir.h"

namespace arch {
namespace {

using nlohmann::json;

const std::string kId = std::string(32, 'a');
const std::string kGeneration = "ckpt-20261207T030000.000000000Z";

class ExportFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    config_.store_path = tmp_ / "store";
    config_.state_dir = tmp_ / "state";
    for (const auto& d :
         {config_.store_path, config_.store_path + "/default", config_.store_path + "/default/job",
          generation(), generation() + "/images", tmp_ / "elsewhere"}) {
      ASSERT_EQ(::mkdir(d.c_str(), 0700), 0) << d;
    }
    sized_file(generation() + "/images/pages-1.img", 3 << 20);
    sized_file(generation() + "/images/pages-2.img", 4096);
  }

  static void sized_file(const std::string& path, off_t size) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0) << path;
    ASSERT_EQ(::ftruncate(fd, size), 0);
    ::close(fd);
  }

  [[nodiscard]] std::string generation() const {
    return config_.store_path + "/default/job/" + kGeneration;
  }
  [[nodiscard]] std::string dir() const { return config_.state_dir + "/migrate-exports"; }

  [[nodiscard]] PageExportRecord good(const std::string& id = kId) const {
    PageExportRecord r;
    r.id = id;
    r.peer = "b";
    r.checkpoint = generation();
    r.files = {{"pages-1.img", 3 << 20}, {"pages-2.img", 4096}};
    r.ns = "default";
    r.container_id = "job";
    r.key = "job";
    r.owner = "default";
    r.store = config_.store_path;
    r.store_root = config_.store_path;
    return r;
  }

  // A fresh registry persisting in the state dir, as a restarted archd has it.
  std::unique_ptr<PageExports> restarted() {
    auto e = std::make_unique<PageExports>();
    auto ok = e->persist_in(config_.state_dir);
    EXPECT_TRUE(ok) << ok.error().message();
    return e;
  }

  void write_record(const std::string& name, const std::string& text, mode_t mode = 0600) {
    ASSERT_TRUE(write_file_atomic(dir() + "/" + name, text, mode));
  }

  PeerLogger log() {
    return [this](LogLevel, const std::string& m) { logged_ += m + "\n"; };
  }

  TempDir tmp_{"arch-exports-"};
  NodeConfig config_;
  std::string logged_;
};

TEST_F(ExportFiles, ComeBackAfterARestartWithTheChunksSent) {
  int conn = 0;
  {
    auto first = restarted();
    ASSERT_TRUE(first->add(good()));
    first->served(kId, "pages-1.img", 0, 1 << 20, &conn);
    first->served(kId, "pages-1.img", 4096, 8192, &conn);  // the same chunk again
    first->served(kId, "pages-2.img", 0, 4096, &conn);
    struct stat st {};
    ASSERT_EQ(::stat((dir() + "/" + kId + ".json").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0600u);
    auto journal = read_file(dir() + "/" + kId + ".served");
    ASSERT_TRUE(journal);
    EXPECT_EQ(*journal, "pages-1.img 0\npages-2.img 0\n");
  }
  auto second = restarted();
  EXPECT_EQ(second->load(config_, log()), 1u) << logged_;
  EXPECT_EQ(second->reloaded(), std::vector<std::string>{kId});
  auto path = second->check(kId, "b", "pages-1.img", 1 << 20, 1 << 20);
  ASSERT_TRUE(path) << path.error().message();
  EXPECT_EQ(*path, generation() + "/images/pages-1.img");
  // Still only for its peer, with the same refusal as an unknown export.
  auto foreign = second->check(kId, "c", "pages-1.img", 0, 4096);
  ASSERT_FALSE(foreign);
  EXPECT_EQ(foreign.error().message(),
            second->check(std::string(32, 'b'), "c", "pages-1.img", 0, 4096).error().message());
  EXPECT_FALSE(second->check(kId, "b", "pages-1.img", 3 << 20, 1));
  auto p = second->progress(kId);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->chunks_total, 4u);
  EXPECT_EQ(p->chunks_served, 2u);
  EXPECT_TRUE(p->reloaded);
  EXPECT_FALSE(p->read_since_load);
  EXPECT_EQ(second->load(config_, log()), 0u) << "loaded twice";
  second->remove(kId);
  EXPECT_FALSE(second->check(kId, "b", "pages-1.img", 0, 4096));
  EXPECT_NE(::access((dir() + "/" + kId + ".json").c_str(), F_OK), 0);
  EXPECT_NE(::access((dir() + "/" + kId + ".served").c_str(), F_OK), 0);
}

TEST_F(ExportFiles, HostileRecordsServeNothing) {
  auto text = [&](const std::function<void(json&)>& edit) {
    json j = json::parse(export_record_json(good()));
    edit(j);
    return j.dump();
  };
  auto other_root = tmp_ / "elsewhere";
  struct Case {
    std::string what, text;
  };
  std::vector<Case> cases = {
      {"not json", "{\"version\": 1,"},
      {"newer version", text([](json& j) { j["version"] = 2; })},
      {"another id", text([](json& j) { j["id"] = std::string(32, 'c'); })},
      {"dot-dot file", text([](json& j) {
         j["files"] = {{"../../../etc/shadow", 4096}};
       })},
      {"slash in file", text([](json& j) {
         j["files"] = {{"pages-1.img/x", 4096}};
       })},
      {"not a pages image", text([](json& j) {
         j["files"] = {{"pagemap-1.img", 4096}};
       })},
      {"no files", text([](json& j) { j["files"] = json::object(); })},
      {"negative size", text([](json& j) {
         j["files"] = {{"pages-1.img", -1}};
       })},
      {"checkpoint outside the store",
       text([&](json& j) { j["checkpoint"] = other_root + "/" + kGeneration; })},
      {"checkpoint with dot-dot", text([&](json& j) {
         j["checkpoint"] = config_.store_path + "/default/job/../job/" + kGeneration;
       })},
      {"checkpoint of another key", text([&](json& j) {
         j["checkpoint"] = config_.store_path + "/default/other/" + kGeneration;
       })},
      {"staging dir",
       text([&](json& j) { j["checkpoint"] = config_.store_path + "/default/job/staging-1"; })},
      {"store root not allowed", text([&](json& j) {
         j["store_root"] = other_root;
         j["store"] = other_root;
       })},
      {"store outside its root", text([&](json& j) { j["store"] = other_root; })},
      {"bad peer", text([](json& j) { j["peer"] = "../b"; })},
      {"bad owner", text([](json& j) { j["owner"] = "a/b"; })},
      {"oversize", text([](json& j) { j["pad"] = std::string(kMaxExportRecordBytes, ' '); })},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    logged_.clear();
    auto exports = restarted();
    write_record(kId + ".json", c.text);
    EXPECT_EQ(exports->load(config_, log()), 0u);
    EXPECT_NE(logged_.find("ignored"), std::string::npos) << logged_;
    EXPECT_FALSE(exports->check(kId, "b", "pages-1.img", 0, 4096));
    EXPECT_TRUE(exports->reloaded().empty());
  }
}

TEST_F(ExportFiles, RecordFilesThatAreNotOursOrNotPlainServeNothing) {
  auto valid = export_record_json(good());
  auto exports = restarted();
  // Readable by others.
  write_record(kId + ".json", valid, 0644);
  EXPECT_EQ(exports->load(config_, log()), 0u);
  ASSERT_EQ(::unlink((dir() + "/" + kId + ".json").c_str()), 0);
  // A symlink to a good record elsewhere.
  ASSERT_TRUE(write_file_atomic(tmp_ / "elsewhere/r.json", valid, 0600));
  ASSERT_EQ(::symlink((tmp_ / "elsewhere/r.json").c_str(), (dir() + "/" + kId + ".json").c_str()),
            0);
  EXPECT_EQ(exports->load(config_, log()), 0u);
  ASSERT_EQ(::unlink((dir() + "/" + kId + ".json").c_str()), 0);
  // A FIFO (never blocks the load).
  ASSERT_EQ(::mkfifo((dir() + "/" + kId + ".json").c_str(), 0600), 0);
  EXPECT_EQ(exports->load(config_, log()), 0u);
  ASSERT_EQ(::unlink((dir() + "/" + kId + ".json").c_str()), 0);
  // The generation reached through a symlink in the store.
  ASSERT_EQ(::rename(generation().c_str(), (tmp_ / "elsewhere/gen").c_str()), 0);
  ASSERT_EQ(::symlink((tmp_ / "elsewhere/gen").c_str(), generation().c_str()), 0);
  write_record(kId + ".json", valid);
  EXPECT_EQ(exports->load(config_, log()), 0u);
  ASSERT_EQ(::unlink(generation().c_str()), 0);
  ASSERT_EQ(::rename((tmp_ / "elsewhere/gen").c_str(), generation().c_str()), 0);
  // A pages image swapped for a symlink.
  std::string image = generation() + "/images/pages-2.img";
  ASSERT_EQ(::unlink(image.c_str()), 0);
  ASSERT_EQ(::symlink("/etc/shadow", image.c_str()), 0);
  EXPECT_EQ(exports->load(config_, log()), 0u);
  EXPECT_FALSE(exports->check(kId, "b", "pages-2.img", 0, 4096));
  EXPECT_FALSE(exports->check(kId, "b", "pages-1.img", 0, 4096));
  // The record stays for the operator to look at; only a missing generation deletes it.
  EXPECT_EQ(::access((dir() + "/" + kId + ".json").c_str(), F_OK), 0);
  // Names that are not records are skipped.
  write_record("notanid.json", valid);
  EXPECT_EQ(exports->load(config_, log()), 0u);
  EXPECT_NE(logged_.find("not an export record"), std::string::npos) << logged_;
}

TEST_F(ExportFiles, AnExportsDirectoryOthersCanWriteIsNotRead) {
  {
    auto first = restarted();
    ASSERT_TRUE(first->add(good()));
  }
  ASSERT_EQ(::chmod(dir().c_str(), 0777), 0);
  PageExports exports;
  EXPECT_FALSE(exports.persist_in(config_.state_dir));
  EXPECT_EQ(exports.load(config_, log()), 0u);
  EXPECT_FALSE(exports.check(kId, "b", "pages-1.img", 0, 4096));
}

TEST_F(ExportFiles, ARecordWhoseGenerationIsGoneIsDeleted) {
  {
    auto first = restarted();
    ASSERT_TRUE(first->add(good()));
  }
  std::filesystem::remove_all(generation());
  auto second = restarted();
  EXPECT_EQ(second->load(config_, log()), 0u);
  EXPECT_NE(logged_.find("is gone"), std::string::npos) << logged_;
  EXPECT_NE(::access((dir() + "/" + kId + ".json").c_str(), F_OK), 0);
  EXPECT_NE(::access((dir() + "/" + kId + ".served").c_str(), F_OK), 0);
}

TEST_F(ExportFiles, JournalLinesOutsideTheRecordAreIgnored) {
  {
    auto first = restarted();
    ASSERT_TRUE(first->add(good()));
  }
  std::string lines =
      "pages-1.img 2\npages-9.img 0\npages-1.img 3\npages-2.img 99999999999999999\n"
      "../../etc/shadow 0\ngarbage\npages-1.img -1\npages-1.img 1";  // the last one cut short
  ASSERT_TRUE(write_file_atomic(dir() + "/" + kId + ".served", lines, 0600));
  auto second = restarted();
  ASSERT_EQ(second->load(config_, log()), 1u) << logged_;
  EXPECT_EQ(second->progress(kId)->chunks_served, 1u);  // pages-1.img 2 only
  // A journal others could write is not believed (nothing sent, so never judged complete).
  ASSERT_TRUE(write_file_atomic(dir() + "/" + kId + ".served", "pages-1.img 0\n", 0666));
  auto third = restarted();
  ASSERT_EQ(third->load(config_, log()), 1u);
  EXPECT_EQ(third->progress(kId)->chunks_served, 0u);
  // Leftovers: a journal without its record, a temp file of a write cut short.
  ASSERT_TRUE(write_file_atomic(dir() + "/" + std::string(32, 'd') + ".served", "x", 0600));
  ASSERT_TRUE(write_file_atomic(dir() + "/" + kId + ".json.tmp.abcdef", "x", 0600));
  auto fourth = restarted();
  EXPECT_EQ(fourth->load(config_, log()), 1u);
  EXPECT_NE(::access((dir() + "/" + std::string(32, 'd') + ".served").c_str(), F_OK), 0);
  EXPECT_NE(::access((dir() + "/" + kId + ".json.tmp.abcdef").c_str(), F_OK), 0);
}

TEST_F(ExportFiles, StopKeepsConnectionsOpenForTheJudgement) {
  PageExports exports;
  ASSERT_TRUE(exports.add(good()));
  int conn = 0;
  for (uint64_t off = 0; off < (3 << 20); off += 1 << 20) {
    exports.served(kId, "pages-1.img", off, 1 << 20, &conn);
  }
  exports.served(kId, "pages-2.img", 0, 4096, &conn);
  EXPECT_EQ(judge_post_copy(*exports.progress(kId), 30000), PostCopy::kRunning);
  exports.stop();
  exports.closed(&conn);
  auto p = exports.progress(kId);
  EXPECT_EQ(p->open_connections, 1u);
  EXPECT_EQ(judge_post_copy(*p, 30000), PostCopy::kStopped);
}

TEST(PostCopyJudgement, AsInProcessAndAfterAReload) {
  PageExportProgress p;
  p.chunks_total = 4;
  p.chunks_served = 4;
  p.open_connections = 1;
  EXPECT_EQ(judge_post_copy(p, 1000), PostCopy::kRunning);  // a page server still reads
  p.open_connections = 0;
  EXPECT_EQ(judge_post_copy(p, 1000), PostCopy::kComplete);
  p.chunks_served = 3;
  EXPECT_EQ(judge_post_copy(p, 1000), PostCopy::kRunning);
  p.idle_ms = 2000;
  EXPECT_EQ(judge_post_copy(p, 1000), PostCopy::kIncomplete);
  // Reloaded: every chunk sent before the restart, but the page server may still run.
  p = {};
  p.chunks_total = 4;
  p.chunks_served = 4;
  p.reloaded = true;
  EXPECT_EQ(judge_post_copy(p, 1000), PostCopy::kRunning);
  p.idle_ms = 2000;  // silent past the limit: it is done
  EXPECT_EQ(judge_post_copy(p, 1000), PostCopy::kComplete);
  p.idle_ms = 0;
  p.read_since_load = true;  // it came back, read, and hung up
  EXPECT_EQ(judge_post_copy(p, 1000), PostCopy::kComplete);
  p.open_connections = 1;
  EXPECT_EQ(judge_post_copy(p, 1000), PostCopy::kRunning);
  p.stopping = true;
  EXPECT_EQ(judge_post_copy(p, 1000), PostCopy::kStopped);
}

TEST(ExportRecord, RoundTrips) {
  NodeConfig config;
  config.store_path = "/var/lib/arch/store";
  PageExportRecord r;
  r.id = kId;
  r.peer = "node-b";
  r.checkpoint = "/var/lib/arch/store/k8s.io+team/job-1/" + kGeneration;
  r.files = {{"pages-1.img", 1}, {"pages-12.img", uint64_t{5} << 30}};
  r.ns = "k8s.io";
  r.container_id = "c1";
  r.key = "job-1";
  r.owner = "k8s.io+team";
  r.store = "/var/lib/arch/store";
  r.store_root = "/var/lib/arch/store";
  auto back = parse_export_record(export_record_json(r), config);
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(export_record_json(*back), export_record_json(r));
  EXPECT_EQ(back->chunks_total(), 1u + 5 * 1024);
  EXPECT_EQ(back->engine, "containerd");
  // A Docker container's export says so (its clean-up is `docker rm -f`); anything else
  // named as the engine is refused.
  r.engine = "docker";
  back = parse_export_record(export_record_json(r), config);
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(back->engine, "docker");
  auto j = nlohmann::json::parse(export_record_json(r));
  j["engine"] = "podman";
  EXPECT_FALSE(parse_export_record(j.dump(), config));
  j.erase("engine");  // a record of before the engine: containerd
  back = parse_export_record(j.dump(), config);
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(back->engine, "containerd");
}

}  // namespace
}  // namespace arch
