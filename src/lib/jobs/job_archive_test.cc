// Tests for JobArchive: export and import of a checkpoint directory (zstd and plain), the
// manifest verifying afterwards, and the archives import refuses.
#include "jobs/job_archive.h"

#include <archive.h>
#include <archive_entry.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "base/file_util.h"
#include "base/temp_dir.h"
#include "store/manifest.h"

namespace arch {
namespace {

namespace fs = std::filesystem;

class JobArchiveTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = tmp_.path();
    ckpt_ = root_ / "ckpt";
    fs::create_directories(ckpt_ / "images");
    fs::create_directories(ckpt_ / "criu");
    std::ofstream(ckpt_ / "images" / "pages-1.img") << std::string(300000, 'p') << "end";
    std::ofstream(ckpt_ / "images" / "core-1.img") << "core";
    std::ofstream(ckpt_ / "criu" / "dump.log") << "log";
    std::ofstream(ckpt_ / "job.json") << "{}";
    Manifest m;
    m.ns = "jobs";
    m.key = "k";
    auto built = build_manifest_files(ckpt_.string(), m);
    ASSERT_TRUE(built) << built.error().message();
    ASSERT_TRUE(
        write_file_atomic((ckpt_ / kManifestFileName).string(), serialize_manifest(*built), 0600));
  }

  // Imports `archive` into a fresh directory and verifies it against its manifest.
  Result<void> import_and_verify(const fs::path& archive) {
    fs::path out = root_ / ("out-" + std::to_string(n_++));
    fs::create_directories(out);
    auto imported = import_archive(archive.string(), out.string());
    if (!imported) return imported;
    auto text = read_file((out / kManifestFileName).string());
    if (!text) return std::unexpected(text.error());
    auto m = parse_manifest(*text);
    if (!m) return std::unexpected(m.error());
    return verify_manifest(out.string(), *m);
  }

  TempDir tmp_{"job-archive-test-"};
  fs::path root_, ckpt_;
  int n_ = 0;
};

TEST_F(JobArchiveTest, ZstdRoundTripVerifies) {
  fs::path archive = root_ / "a.tar.zst";
  auto bytes = export_checkpoint(ckpt_.string(), archive.string(), {true, 3});
  ASSERT_TRUE(bytes) << bytes.error().message();
  EXPECT_EQ(*bytes, fs::file_size(archive));
  EXPECT_LT(*bytes, 100000u);  // compressed
  auto ok = import_and_verify(archive);
  EXPECT_TRUE(ok) << ok.error().message();
  for (const auto& e : fs::directory_iterator(root_)) {
    EXPECT_EQ(e.path().string().find(".tmp-"), std::string::npos) << "temp file left";
  }
}

TEST_F(JobArchiveTest, PlainTarRoundTripVerifies) {
  fs::path archive = root_ / "a.tar";
  ASSERT_TRUE(export_checkpoint(ckpt_.string(), archive.string(), {false, 3}));
  EXPECT_TRUE(import_and_verify(archive));
}

TEST_F(JobArchiveTest, TruncatedAndCorruptedArchivesFail) {
  fs::path archive = root_ / "a.tar.zst";
  ASSERT_TRUE(export_checkpoint(ckpt_.string(), archive.string(), {true, 3}));
  auto data = read_file(archive.string());
  ASSERT_TRUE(data);
  fs::path truncated = root_ / "t.tar.zst";
  std::ofstream(truncated, std::ios::binary) << data->substr(0, data->size() / 2);
  auto t = import_and_verify(truncated);
  ASSERT_FALSE(t);
  fs::path corrupted = root_ / "c.tar.zst";
  std::string bad = *data;
  for (std::size_t i = bad.size() / 3; i < bad.size() / 3 + 32; ++i)
    bad[i] = static_cast<char>(bad[i] ^ 0x5a);
  std::ofstream(corrupted, std::ios::binary) << bad;
  EXPECT_FALSE(import_and_verify(corrupted));
  fs::path garbage = root_ / "g.tar.zst";
  std::ofstream(garbage) << "not an archive";
  EXPECT_FALSE(import_and_verify(garbage));
  EXPECT_FALSE(import_and_verify(root_ / "missing.tar.zst"));
}

TEST_F(JobArchiveTest, RefusesUnsafeEntries) {
  for (auto [name, type] :
       {std::pair{"../evil", AE_IFREG}, std::pair{"/abs", AE_IFREG}, std::pair{"link", AE_IFLNK}}) {
    fs::path file = root_ / "evil.tar";
    fs::remove(file);
    archive* a = archive_write_new();
    archive_write_set_format_pax_restricted(a);
    archive_write_open_filename(a, file.c_str());
    archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, name);
    archive_entry_set_filetype(e, static_cast<unsigned>(type));
    archive_entry_set_perm(e, 0600);
    if (type == AE_IFLNK) archive_entry_set_symlink(e, "/etc/passwd");
    archive_entry_set_size(e, 0);
    archive_write_header(a, e);
    archive_entry_free(e);
    archive_write_close(a);
    archive_write_free(a);
    fs::path out = root_ / "evil-out";
    fs::remove_all(out);
    fs::create_directories(out);
    auto r = import_archive(file.string(), out.string());
    ASSERT_FALSE(r) << name;
    EXPECT_TRUE(fs::is_empty(out)) << name;
    EXPECT_FALSE(fs::exists(root_ / "evil"));
  }
}

}  // namespace
}  // namespace arch
