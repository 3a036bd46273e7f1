// PagesAtRest: the manifest view a lazy restore serves from, and the decrypting page source
// (before and after a fork, a tampered chunk refused).
#include "criu/pages_at_rest.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include "base/file_util.h"
#include "base/temp_dir.h"
#include "criu/page_server.h"

namespace arch {
namespace {

std::string iov(uint32_t cmd, uint64_t nr, uint64_t vaddr, uint64_t dst) {
  auto b = encode_page_server_iov({cmd, nr, vaddr, dst});
  return std::string(b.data(), b.size());
}

class PagesAtRestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string secret(32, 's');
    keys_ = std::make_shared<Keyring>();
    keys_->add({node_key_id(secret), secret}, true);
    ASSERT_EQ(::mkdir((dir_.path() + "/images").c_str(), 0700), 0);
    auto fd = open_file(dir_.path() + "/images", O_RDONLY | O_DIRECTORY);
    ASSERT_TRUE(fd);
    PageReceiverOptions o;
    o.images_dirfd = fd->get();
    o.max_bytes = 64 << 20;
    o.key = keys_->active();
    o.stream_id = "0123456789abcdef0123456789abcdef";
    // 3 MiB of pages (3 chunk digests), each page distinct.
    std::string s = iov(kPsIovOpen2, 0, 0, 1 << 8 | 1);
    s += iov(kPsIovAddF | kPePresent << 16, 768, 0x10000000, 1 << 8 | 1);
    for (int p = 0; p < 768; ++p) {
      std::string page(kCriuPageSize, static_cast<char>('a' + p % 26));
      std::memcpy(page.data(), &p, sizeof p);
      plain_ += page;
    }
    s += plain_ + iov(kPsIovFlush, 0, 0, 0);
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    UniqueFd a(sv[0]), b(sv[1]);
    std::thread w([&] {
      (void)write_all(a.get(), s);
      ::shutdown(a.get(), SHUT_WR);
    });
    auto got = receive_pages(b.get(), o);
    w.join();
    ASSERT_TRUE(got) << got.error().message();
    m_.files.push_back({"images/other.img", 3, std::string(64, '0')});
    add_received_files(m_, *got);
    m_.encryption = stream_encryption(o.stream_id);
    m_.extra = {{"pages_at_rest", pages_at_rest_record(got->pages)}};
    chunks_ = got->pages[0].chunk_sha256;
  }
  TempDir dir_;
  std::shared_ptr<Keyring> keys_;
  std::string plain_;
  Manifest m_;
  std::vector<std::string> chunks_;
};

TEST_F(PagesAtRestTest, ServedManifestListsThePlaintextPages) {
  EXPECT_TRUE(has_encrypted_pages(m_));
  auto view = served_manifest(m_);
  ASSERT_TRUE(view) << view.error().message();
  ASSERT_EQ(view->files.size(), 2u);
  EXPECT_EQ(view->files[1].path, "images/pages-1.img");
  EXPECT_EQ(view->files[1].size, plain_.size());
  EXPECT_EQ(view->chunks.at("images/pages-1.img").sha256, chunks_);
  EXPECT_EQ(chunks_.size(), 3u);
  // A record that does not cover a listed image, or its size, is refused.
  Manifest missing = m_;
  missing.extra["pages_at_rest"]["images"].erase("pages-1.img");
  EXPECT_FALSE(served_manifest(missing));
  Manifest short_digests = m_;
  short_digests.extra["pages_at_rest"]["images"]["pages-1.img"]["sha256"].erase(0);
  EXPECT_FALSE(served_manifest(short_digests));
  Manifest no_stream = m_;
  no_stream.encryption = nullptr;
  EXPECT_FALSE(served_manifest(no_stream));
}

TEST_F(PagesAtRestTest, SourceDecryptsAndVerifiesBeforeAndAfterAFork) {
  auto view = served_manifest(m_);
  ASSERT_TRUE(view);
  auto source = encrypted_page_source(dir_.path(), m_, keys_)("pages-1.img");
  ASSERT_TRUE(source) << source.error().message();
  auto vf = VerifiedPagesFile::make(*source, "pages-1.img", plain_.size(), kPagesChunkSize,
                                    view->chunks.at("images/pages-1.img").sha256);
  ASSERT_TRUE(vf) << vf.error().message();
  std::string out(8192, '\0');
  ASSERT_TRUE(vf->read((1 << 20) + 4096, out.data(), out.size()));
  EXPECT_EQ(out, plain_.substr((1 << 20) + 4096, 8192));
  // The forked page server reads through the same source (it opens the file itself).
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  pid_t pid = ::fork();
  if (pid == 0) {
    std::string buf(4096, '\0');
    bool ok = vf->read(2 << 20, buf.data(), buf.size()).has_value() &&
              buf == plain_.substr(2 << 20, 4096);
    (void)!::write(p[1], ok ? "y" : "n", 1);
    ::_exit(0);
  }
  ::close(p[1]);
  char c = 0;
  EXPECT_EQ(::read(p[0], &c, 1), 1);
  EXPECT_EQ(c, 'y');
  ::close(p[0]);
  ::waitpid(pid, nullptr, 0);
}

TEST_F(PagesAtRestTest, ATamperedChunkIsNeverServed) {
  std::string path = dir_.path() + "/images/pages-1.img.arch";
  {
    auto fd = open_file(path, O_RDWR);
    ASSERT_TRUE(fd);
    char b = 0;
    ASSERT_EQ(::pread(fd->get(), &b, 1, 2 << 20), 1);
    b = static_cast<char>(b ^ 0x55);
    ASSERT_EQ(::pwrite(fd->get(), &b, 1, 2 << 20), 1);
  }
  auto view = served_manifest(m_);
  ASSERT_TRUE(view);
  auto source = encrypted_page_source(dir_.path(), m_, keys_)("pages-1.img");
  ASSERT_TRUE(source);
  auto vf = VerifiedPagesFile::make(*source, "pages-1.img", plain_.size(), kPagesChunkSize,
                                    view->chunks.at("images/pages-1.img").sha256);
  ASSERT_TRUE(vf);
  std::string out(4096, '\0');
  auto r = vf->read(0, out.data(), out.size());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), EBADMSG) << r.error().message();
  EXPECT_EQ(out, std::string(4096, '\0'));  // nothing copied
}

}  // namespace
}  // namespace arch
