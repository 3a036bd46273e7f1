// Tests for the manifest: JSON round trip, version refusal, building and verifying a tree.
#include "store/manifest.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

namespace arch {
namespace {

namespace fs = std::filesystem;

std::string message(const Error& e) {
  return e.message();
}

void write(const fs::path& p, const std::string& data) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << data;
}

Manifest sample() {
  Manifest m;
  m.ns = "default";
  m.key = "job-1";
  m.container_id = "c1";
  m.node = "node-a";
  m.image = "docker.io/library/busybox:latest";
  m.created = "2024-05-01T12:00:00.000000001Z";
  m.versions = {"0.1.0", "4.0", "1.1.12", "6.1.0"};
  m.timings_ms = {{"dump", 812.5}, {"freeze", 3}};
  m.files = {{"images/pages-1.img", 1 << 20, std::string(64, 'a')},
             {"rootfs-diff.tar", 0, std::string(64, '0')}};
  m.extra = {{"criu_args", {"--tcp-established"}}};
  return m;
}

TEST(Manifest, RoundTripsThroughJson) {
  Manifest m = sample();
  std::string text = serialize_manifest(m);
  auto back = parse_manifest(text);
  ASSERT_TRUE(back) << message(back.error());
  EXPECT_EQ(*back, m);
  EXPECT_NE(text.find("\"namespace\": \"default\""), std::string::npos) << text;
  EXPECT_EQ(text.back(), '\n');

  Manifest no_extra = sample();
  no_extra.extra = nullptr;
  EXPECT_EQ(serialize_manifest(no_extra).find("extra"), std::string::npos);
  EXPECT_EQ(*parse_manifest(serialize_manifest(no_extra)), no_extra);
}

TEST(Manifest, RefusesNewerFormatAndReadsOlderShapes) {
  auto newer = parse_manifest(R"({"format_version": 3, "files": []})");
  ASSERT_FALSE(newer);
  EXPECT_NE(message(newer.error()).find("format version 3 is newer"), std::string::npos)
      << message(newer.error());

  // Version 1 written by an older build: only the required fields.
  auto older = parse_manifest(R"({"format_version": 1, "files": [], "future_field": 7})");
  ASSERT_TRUE(older) << message(older.error());
  EXPECT_TRUE(older->files.empty());
  EXPECT_TRUE(older->ns.empty());

  EXPECT_FALSE(parse_manifest(R"({"format_version": 0, "files": []})"));
  EXPECT_FALSE(parse_manifest(R"({"files": []})"));
  EXPECT_FALSE(parse_manifest(R"({"format_version": 1})"));
  EXPECT_FALSE(parse_manifest("not json"));
  EXPECT_FALSE(parse_manifest("[]"));
  EXPECT_FALSE(parse_manifest(R"({"format_version": 1, "node": 5, "files": []})"));
}

TEST(Manifest, RefusesBadFileEntries) {
  auto with_file = [](const std::string& path, const std::string& size, const std::string& sha) {
    return parse_manifest(R"({"format_version": 1, "files": [{"path": ")" + path +
                          R"(", "size": )" + size + R"(, "sha256": ")" + sha + R"("}]})");
  };
  std::string good_sha(64, 'f');
  EXPECT_TRUE(with_file("a/b.img", "1", good_sha));
  for (const char* path :
       {"/etc/passwd", "../x", "a/../../x", "a//b", "a/", "./a", "", "manifest.json"}) {
    EXPECT_FALSE(with_file(path, "1", good_sha)) << path;
  }
  EXPECT_FALSE(with_file("a", "-1", good_sha));
  EXPECT_FALSE(with_file("a", "1.5", good_sha));
  EXPECT_FALSE(with_file("a", "1", std::string(64, 'F')));
  EXPECT_FALSE(with_file("a", "1", "abc"));
  auto twice = parse_manifest(R"({"format_version": 1, "files": [
      {"path": "a", "size": 1, "sha256": ")" +
                              good_sha + R"("},
      {"path": "a", "size": 1, "sha256": ")" +
                              good_sha + R"("}]})");
  ASSERT_FALSE(twice);
  EXPECT_NE(message(twice.error()).find("twice"), std::string::npos);
}

TEST(Manifest, DigestIsSha256) {
  auto dir = fs::temp_directory_path() / ("arch-digest-" + std::to_string(::getpid()));
  write(dir / "abc", "abc");
  int fd = ::open((dir / "abc").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  auto d = digest_fd(fd);
  ::close(fd);
  fs::remove_all(dir);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->size, 3u);
  EXPECT_EQ(d->sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

class ManifestDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("arch-manifest-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    write(dir_ / "images" / "pages-1.img", std::string(3 << 20, 'p') + "tail");
    write(dir_ / "images" / "core-1.img", "core");
    write(dir_ / "rootfs-diff.tar", "tar");
    write(dir_ / "empty", "");
    fs::create_directories(dir_ / "empty-dir");
  }
  void TearDown() override { fs::remove_all(dir_); }

  Manifest build() {
    auto m = build_manifest_files(dir_.string(), Manifest{});
    EXPECT_TRUE(m) << message(m.error());
    return m ? *m : Manifest{};
  }
  std::string verify_error(const Manifest& m) {
    auto r = verify_manifest(dir_.string(), m);
    return r ? "" : message(r.error());
  }
  fs::path dir_;
};

TEST_F(ManifestDirTest, BuildListsRegularFilesSortedWithDigests) {
  write(dir_ / "manifest.json", "{}");  // the manifest itself is never listed
  Manifest m = build();
  ASSERT_EQ(m.files.size(), 4u);
  EXPECT_EQ(m.files[0].path, "empty");
  EXPECT_EQ(m.files[1].path, "images/core-1.img");
  EXPECT_EQ(m.files[2].path, "images/pages-1.img");
  EXPECT_EQ(m.files[3].path, "rootfs-diff.tar");
  EXPECT_EQ(m.files[2].size, (3u << 20) + 4);
  EXPECT_EQ(m.files[0].sha256, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(verify_error(m), "");
  // And it survives the trip through JSON.
  auto back = parse_manifest(serialize_manifest(m));
  ASSERT_TRUE(back);
  EXPECT_EQ(verify_error(*back), "");
}

TEST_F(ManifestDirTest, BuildTakesDigestsTheWriterKnewWhenTheSizeMatches) {
  Manifest base;
  std::string known(64, 'a');
  base.files = {{"images/core-1.img", 4, known},  // size matches: taken as listed
                {"rootfs-diff.tar", 99, known},   // size differs: hashed
                {"images/gone.img", 1, known}};   // not on disk: not listed
  auto m = build_manifest_files(dir_.string(), base);
  ASSERT_TRUE(m) << message(m.error());
  ASSERT_EQ(m->files.size(), 4u);
  EXPECT_EQ(m->files[1].path, "images/core-1.img");
  EXPECT_EQ(m->files[1].sha256, known);
  EXPECT_EQ(m->files[3].path, "rootfs-diff.tar");
  EXPECT_NE(m->files[3].sha256, known);
  EXPECT_EQ(m->files[3].size, 3u);
  // A wrong digest taken on trust is still caught by every later verify.
  EXPECT_NE(verify_error(*m), "");
}

TEST_F(ManifestDirTest, BuildKeepsTheChunkDigestsTheWriterKnew) {
  // A pages image written by the page receiver (criu/page_receiver.h) comes with its size,
  // digest and chunk digests: taken as listed, chunk digests kept, not read again.
  Manifest base;
  std::string known(64, 'b');
  uint64_t size = (3 << 20) + 4;
  base.files = {{"images/pages-1.img", size, known}};
  std::vector<std::string> chunks(4, std::string(64, 'c'));
  base.chunks["images/pages-1.img"] = {kPagesChunkSize, chunks};
  auto m = build_manifest_files(dir_.string(), base);
  ASSERT_TRUE(m) << message(m.error());
  ASSERT_TRUE(m->chunks.contains("images/pages-1.img"));
  EXPECT_EQ(m->chunks.at("images/pages-1.img").sha256, chunks);
  auto it = std::find_if(m->files.begin(), m->files.end(),
                         [](const ManifestFile& f) { return f.path == "images/pages-1.img"; });
  ASSERT_NE(it, m->files.end());
  EXPECT_EQ(it->sha256, known);
  // Without them the build hashes the file and its chunks itself.
  auto fresh = build_manifest_files(dir_.string(), Manifest{});
  ASSERT_TRUE(fresh);
  EXPECT_NE(fresh->chunks.at("images/pages-1.img").sha256, chunks);
}

TEST_F(ManifestDirTest, SealedImageStreamsAreCheckedBySizeOthersByDigest) {
  write(dir_ / "images" / "pages-1.img.arch", "sealed");
  Manifest m = build();
  m.encryption = stream_encryption(std::string(32, 'a'));
  for (auto& f : m.files) f.sha256 = std::string(64, '0');  // every digest wrong
  // The plain files are still hashed.
  EXPECT_NE(verify_error(m), "");
  Manifest only_stream = m;
  std::erase_if(only_stream.files,
                [](const ManifestFile& f) { return f.path != "images/pages-1.img.arch"; });
  fs::remove_all(dir_ / "images" / "pages-1.img");
  fs::remove_all(dir_ / "images" / "core-1.img");
  fs::remove_all(dir_ / "rootfs-diff.tar");
  fs::remove_all(dir_ / "empty");
  // The stream: size only (its chunks authenticate themselves when read)...
  EXPECT_EQ(verify_error(only_stream), "");
  only_stream.files[0].size += 1;
  EXPECT_NE(verify_error(only_stream), "");
  // ...and only under a stream manifest.
  only_stream.files[0].size -= 1;
  only_stream.encryption = nullptr;
  EXPECT_NE(verify_error(only_stream), "");
}

TEST_F(ManifestDirTest, BuildRefusesSymlinksAndSpecialFiles) {
  fs::create_symlink("/etc/passwd", dir_ / "images" / "link");
  auto m = build_manifest_files(dir_.string(), Manifest{});
  ASSERT_FALSE(m);
  EXPECT_NE(message(m.error()).find("images/link: a symlink"), std::string::npos)
      << message(m.error());
  fs::remove(dir_ / "images" / "link");
  ASSERT_EQ(::mkfifo((dir_ / "fifo").c_str(), 0600), 0);
  auto f = build_manifest_files(dir_.string(), Manifest{});
  ASSERT_FALSE(f);
  EXPECT_NE(message(f.error()).find("fifo"), std::string::npos);
}

TEST_F(ManifestDirTest, VerifyDetectsAFlippedByte) {
  Manifest m = build();
  {
    std::fstream f(dir_ / "images" / "pages-1.img",
                   std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(1 << 20);
    f.put('q');
  }
  std::string e = verify_error(m);
  EXPECT_NE(e.find("images/pages-1.img: sha256"), std::string::npos) << e;
  EXPECT_NE(e.find("manifest says " + m.files[2].sha256), std::string::npos) << e;
}

TEST_F(ManifestDirTest, VerifyDetectsATruncatedFile) {
  Manifest m = build();
  fs::resize_file(dir_ / "images" / "pages-1.img", 1000);
  std::string e = verify_error(m);
  EXPECT_NE(e.find("images/pages-1.img: size 1000 bytes, manifest says 3145732"), std::string::npos)
      << e;
}

TEST_F(ManifestDirTest, VerifyDetectsAnExtraFile) {
  Manifest m = build();
  write(dir_ / "images" / "planted.img", "x");
  std::string e = verify_error(m);
  EXPECT_NE(e.find("unlisted file images/planted.img"), std::string::npos) << e;
}

TEST_F(ManifestDirTest, VerifyDetectsAMissingFile) {
  Manifest m = build();
  fs::remove(dir_ / "images" / "core-1.img");
  std::string e = verify_error(m);
  EXPECT_NE(e.find("missing file images/core-1.img"), std::string::npos) << e;
}

TEST_F(ManifestDirTest, VerifyRefusesAFileReplacedByASymlink) {
  Manifest m = build();
  fs::path elsewhere = dir_.string() + "-elsewhere";
  write(elsewhere / "tar", "tar");  // same contents, outside the checkpoint
  fs::remove(dir_ / "rootfs-diff.tar");
  fs::create_symlink(elsewhere / "tar", dir_ / "rootfs-diff.tar");
  std::string e = verify_error(m);
  fs::remove_all(elsewhere);
  EXPECT_NE(e.find("rootfs-diff.tar: a symlink"), std::string::npos) << e;
}

// Pages images carry a digest per 1 MiB chunk, computed in the same pass as the file's.
TEST_F(ManifestDirTest, PagesImagesGetChunkDigests) {
  Manifest m = build();
  ASSERT_EQ(m.files[2].path, "images/pages-1.img");
  ASSERT_TRUE(m.chunks.contains("images/pages-1.img"));
  const FileChunks& pages = m.chunks["images/pages-1.img"];
  EXPECT_EQ(pages.size, kPagesChunkSize);
  ASSERT_EQ(pages.sha256.size(), 4u);  // 3 MiB + 4 bytes
  // Chunk 3 is the 4-byte tail: its digest is that of "tail".
  EXPECT_EQ(pages.sha256[3], "0c62f876ef1dea830de9f32c2f4b46dd6d74d50d15896e09ef5a2fcd4ac7e1d7");
  EXPECT_EQ(pages.sha256[0], pages.sha256[1]);  // all 'p'
  EXPECT_NE(pages.sha256[0], pages.sha256[3]);
  EXPECT_EQ(m.chunks.size(), 1u);  // core-1.img: whole-file digest only
  EXPECT_TRUE(has_chunked_pages(m));
  auto back = parse_manifest(serialize_manifest(m));
  ASSERT_TRUE(back) << message(back.error());
  EXPECT_EQ(*back, m);
  EXPECT_NE(serialize_manifest(m).find("\"chunks\""), std::string::npos);
}

TEST(Manifest, ChunkDigestsMatchEachChunk) {
  auto dir = fs::temp_directory_path() / ("arch-chunks-" + std::to_string(::getpid()));
  std::string one(1 << 20, 'a'), two = "bc";
  write(dir / "f", one + two);
  int fd = ::open((dir / "f").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  auto d = digest_fd(fd, kPagesChunkSize);
  ::close(fd);
  write(dir / "a", one);
  write(dir / "b", two);
  auto whole = [&](const char* name) {
    int f = ::open((dir / name).c_str(), O_RDONLY | O_CLOEXEC);
    auto r = digest_fd(f);
    ::close(f);
    return r ? r->sha256 : std::string();
  };
  std::string a = whole("a"), b = whole("b");
  fs::remove_all(dir);
  ASSERT_TRUE(d);
  ASSERT_EQ(d->chunks.size(), 2u);
  EXPECT_EQ(d->chunks[0], a);
  EXPECT_EQ(d->chunks[1], b);
  EXPECT_EQ(d->size, (1u << 20) + 2);
}

TEST(Manifest, RefusesInconsistentChunkDigests) {
  Manifest m = sample();  // pages-1.img: 1 MiB
  const std::string pages = "images/pages-1.img";
  m.chunks[pages] = {kPagesChunkSize, {std::string(64, 'b')}};
  auto back = parse_manifest(serialize_manifest(m));
  ASSERT_TRUE(back) << message(back.error());
  EXPECT_EQ(*back, m);
  Manifest two = m;
  two.chunks[pages].sha256.push_back(std::string(64, 'c'));  // 2 digests for 1 chunk
  EXPECT_FALSE(parse_manifest(serialize_manifest(two)));
  Manifest bad_hex = m;
  bad_hex.chunks[pages].sha256[0] = std::string(64, 'Z');
  EXPECT_FALSE(parse_manifest(serialize_manifest(bad_hex)));
  Manifest odd_size = m;
  odd_size.chunks[pages].size = 1000;
  EXPECT_FALSE(parse_manifest(serialize_manifest(odd_size)));
  Manifest unlisted = m;
  unlisted.chunks["images/pages-9.img"] = {kPagesChunkSize, {std::string(64, 'b')}};
  EXPECT_FALSE(parse_manifest(serialize_manifest(unlisted)));
}

// A lazy restore defers the pages images (their chunks are checked as served); every other
// file is still hashed before the restore.
TEST_F(ManifestDirTest, DeferredScopeChecksChunkedPagesBySizeOnly) {
  Manifest m = build();
  {
    std::fstream f(dir_ / "images" / "pages-1.img",
                   std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(1 << 20);
    f.put('q');
  }
  auto dir = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(dir, 0);
  EXPECT_TRUE(verify_manifest(dir, m, VerifyScope::kDeferChunked));
  EXPECT_FALSE(verify_manifest(dir, m, VerifyScope::kAllFiles));
  // A pages image without chunk digests (an older checkpoint) is hashed in either scope.
  Manifest old = m;
  old.chunks.clear();
  EXPECT_FALSE(has_chunked_pages(old));
  EXPECT_FALSE(verify_manifest(dir, old, VerifyScope::kDeferChunked));
  // The size is still checked.
  write(dir_ / "images" / "pages-1.img", "short");
  EXPECT_FALSE(verify_manifest(dir, m, VerifyScope::kDeferChunked));
  // And every other file is hashed.
  write(dir_ / "images" / "pages-1.img", std::string(3 << 20, 'p') + "tail");
  write(dir_ / "images" / "core-1.img", "CORE");
  EXPECT_FALSE(verify_manifest(dir, m, VerifyScope::kDeferChunked));
  ::close(dir);
}

}  // namespace
}  // namespace arch
