// Tests for JobArchive: export and import of a checkpoint directory (zstd and plain), the
// manifest verifying afterwards, and the archives import refuses.
#include "store/checkpoint_archive.h"

#include <archive.h>
#include <archive_entry.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
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

// ---- Limits: an archive expands to its manifest's files and no further ----

// Writes a tar (zstd when asked) of entries: (path, size, fill byte); size < 0 makes a
// directory. Data is streamed, so a bomb of gigabytes costs no memory here.
struct Item {
  std::string path;
  long long size;
  char fill = 'z';
  std::string data = {};
};

void write_tar(const fs::path& file, const std::vector<Item>& items, bool zstd) {
  archive* a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  if (zstd) archive_write_add_filter_zstd(a);
  ASSERT_EQ(archive_write_open_filename(a, file.c_str()), ARCHIVE_OK);
  std::string chunk(1 << 20, '\0');
  for (const Item& it : items) {
    archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, it.path.c_str());
    archive_entry_set_filetype(e, it.size < 0 ? AE_IFDIR : AE_IFREG);
    archive_entry_set_perm(e, 0600);
    long long size =
        it.data.empty() ? std::max(0LL, it.size) : static_cast<long long>(it.data.size());
    archive_entry_set_size(e, size);
    archive_write_header(a, e);
    if (!it.data.empty()) {
      archive_write_data(a, it.data.data(), it.data.size());
    } else {
      std::fill(chunk.begin(), chunk.end(), it.fill);
      for (long long left = size; left > 0; left -= static_cast<long long>(chunk.size()))
        archive_write_data(a, chunk.data(), std::min(chunk.size(), static_cast<std::size_t>(left)));
    }
    archive_entry_free(e);
  }
  archive_write_close(a);
  archive_write_free(a);
}

// manifest.json text listing `files` (path, size; digests of nothing: import never
// checks them, the caller's verify does).
std::string manifest_listing(const std::vector<std::pair<std::string, uint64_t>>& files) {
  Manifest m;
  m.ns = "jobs";
  m.key = "k";
  for (const auto& [path, size] : files) m.files.push_back({path, size, std::string(64, '0')});
  return serialize_manifest(m);
}

uint64_t disk_bytes(const fs::path& root) {
  uint64_t total = 0;
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    struct stat st {};
    if (::lstat(e.path().c_str(), &st) == 0) total += static_cast<uint64_t>(st.st_blocks) * 512;
  }
  return total;
}

class JobArchiveLimits : public JobArchiveTest {
 protected:
  Result<void> import_into(const fs::path& archive, ExpansionLimits caps = {}) {
    out_ = root_ / ("limits-" + std::to_string(n_++));
    fs::create_directories(out_);
    return import_archive(archive.string(), out_.string(), caps);
  }
  fs::path out_;
};

TEST_F(JobArchiveLimits, ExportWritesTheManifestFirst) {
  fs::path file = root_ / "a.tar.zst";
  ASSERT_TRUE(export_checkpoint(ckpt_.string(), file.string(), {true, 3}));
  archive* a = archive_read_new();
  archive_read_support_format_tar(a);
  archive_read_support_filter_zstd(a);
  ASSERT_EQ(archive_read_open_filename(a, file.c_str(), 1 << 16), ARCHIVE_OK);
  archive_entry* e = nullptr;
  ASSERT_EQ(archive_read_next_header(a, &e), ARCHIVE_OK);
  EXPECT_STREQ(archive_entry_pathname(e), "manifest.json");
  archive_read_free(a);
}

TEST_F(JobArchiveLimits, AnArchiveThatDoesNotBeginWithItsManifestIsRefused) {
  fs::path file = root_ / "late.tar";
  write_tar(file, {{"images/pages-1.img", 10}, {"manifest.json", 0, 0, manifest_listing({})}},
            false);
  auto r = import_into(file);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("does not begin with manifest.json"), std::string::npos)
      << r.error().message();
  EXPECT_TRUE(fs::is_empty(out_));
}

// The 66 KB archive that expanded to 2 GiB: a file far larger than its manifest says.
TEST_F(JobArchiveLimits, AFileLargerThanItsManifestSaysIsRefusedUnwritten) {
  fs::path file = root_ / "bomb.tar.zst";
  write_tar(file,
            {{"manifest.json", 0, 0, manifest_listing({{"images/pages-1.img", 4096}})},
             {"images", -1},
             {"images/pages-1.img", 256LL << 20}},
            true);
  EXPECT_LT(fs::file_size(file), 128u << 10);
  auto r = import_into(file);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), EFBIG) << r.error().message();
  EXPECT_NE(r.error().message().find("refused"), std::string::npos) << r.error().message();
  EXPECT_LT(disk_bytes(out_), 64u << 10);
}

// A manifest may claim big files honestly; the node's cap still holds.
TEST_F(JobArchiveLimits, TheNodeCapHoldsWhateverTheManifestClaims) {
  fs::path file = root_ / "big.tar.zst";
  write_tar(file,
            {{"manifest.json", 0, 0, manifest_listing({{"images/pages-1.img", 64 << 20}})},
             {"images/pages-1.img", 64 << 20}},
            true);
  auto r = import_into(file, {1 << 20, 100});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), EFBIG) << r.error().message();
  EXPECT_LT(disk_bytes(out_), 64u << 10) << "refused before writing";
  auto ok = import_into(file, {65 << 20, 100});
  EXPECT_TRUE(ok) << ok.error().message();
}

TEST_F(JobArchiveLimits, OnlyListedFilesOnceAndTheirDirectories) {
  std::string m = manifest_listing({{"images/pages-1.img", 3}});
  std::vector<std::vector<Item>> bad = {
      {{"manifest.json", 0, 0, m}, {"images/other.img", 3}},
      {{"manifest.json", 0, 0, m}, {"elsewhere", -1}},
      {{"manifest.json", 0, 0, m}, {"images/pages-1.img", 3}, {"images/pages-1.img", 3}},
      {{"manifest.json", 0, 0, m}, {"images/pages-1.img", 4}},
  };
  for (std::size_t i = 0; i < bad.size(); ++i) {
    fs::path file = root_ / ("bad-" + std::to_string(i) + ".tar");
    write_tar(file, bad[i], false);
    EXPECT_FALSE(import_into(file)) << "case " << i;
  }
  fs::path good = root_ / "good.tar";
  write_tar(good, {{"manifest.json", 0, 0, m}, {"images", -1}, {"images/pages-1.img", 3}}, false);
  auto r = import_into(good);
  EXPECT_TRUE(r) << r.error().message();
}

TEST_F(JobArchiveLimits, ZstdWindowAboveTheCapIsRefused) {
  fs::path file = root_ / "wide.tar.zst";
  std::string frame("\x28\xb5\x2f\xfd\x00", 5);
  frame.push_back(static_cast<char>(17 << 3));  // window log 27: 128 MiB
  frame += std::string("\x03\x00\x00", 3) + std::string(4096, '\0');
  std::ofstream(file, std::ios::binary) << frame;
  auto r = import_into(file);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("window"), std::string::npos) << r.error().message();
}

}  // namespace
}  // namespace arch
