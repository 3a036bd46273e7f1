// Tests for the image-streaming protocol against a fake CRIU speaking its side: images kept
// open at once (as CRIU does with pagemap and pages), missing images on restore, names that
// would leave the images directory, and a cancelled wait.
#include "criu/image_streamer.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <map>
#include <mutex>
#include <thread>

#include "base/fd_passing.h"
#include "base/file_util.h"

namespace arch {
namespace {

// CRIU's side of the connection.
class FakeCriu {
 public:
  explicit FakeCriu(const StreamerSocket& s, bool capture) {
    fd_ = UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::string path = s.dir() + (capture ? "/streamer-capture.sock" : "/streamer-serve.sock");
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    EXPECT_EQ(::connect(fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  }
  void request(const std::string& name) {
    std::string msg = "\x0a";
    msg += static_cast<char>(name.size());
    msg += name;
    auto len = static_cast<uint32_t>(msg.size());
    std::string out(reinterpret_cast<const char*>(&len), 4);
    ASSERT_TRUE(write_all(fd_.get(), out + msg));
  }
  bool reply() {
    char r[6];
    EXPECT_EQ(::read(fd_.get(), r, 6), 6);
    return r[5] == 1;
  }
  // Sends one pipe end; returns ours.
  UniqueFd send_pipe(bool we_write) {
    int p[2];
    EXPECT_EQ(::pipe2(p, O_CLOEXEC), 0);
    UniqueFd rd(p[0]), wr(p[1]);
    int theirs = we_write ? rd.get() : wr.get();
    EXPECT_TRUE(send_fd(fd_.get(), theirs));
    return we_write ? std::move(wr) : std::move(rd);
  }
  void close() { fd_.reset(); }

 private:
  UniqueFd fd_;
};

TEST(ImageStreamer, CapturesImagesKeptOpenAtOnce) {
  auto s = StreamerSocket::create(true);
  ASSERT_TRUE(s) << s.error().message();
  std::mutex m;
  std::map<std::string, std::string> got;
  Result<std::vector<StreamedImage>> result = std::vector<StreamedImage>();
  std::thread server([&] {
    result = capture_images(*s, [&](const std::string& name, int fd) -> Result<uint64_t> {
      auto text = read_all(fd, 64 << 20);
      if (!text) return std::unexpected(text.error());
      std::lock_guard lock(m);
      got[name] = *text;
      return text->size();
    });
  });
  FakeCriu criu(*s, true);
  criu.request("pagemap-1.img");
  UniqueFd pagemap = criu.send_pipe(true);
  criu.request("pages-1.img");
  UniqueFd pages = criu.send_pipe(true);
  // More than a pipe holds into pages while pagemap is still open.
  std::string big(1 << 20, 'p');
  ASSERT_TRUE(write_all(pages.get(), big));
  ASSERT_TRUE(write_all(pagemap.get(), "map"));
  pages.reset();
  pagemap.reset();
  criu.close();
  server.join();
  ASSERT_TRUE(result) << result.error().message();
  ASSERT_EQ(result->size(), 2u);
  EXPECT_EQ((*result)[0].name, "pagemap-1.img");
  EXPECT_EQ((*result)[1].bytes, big.size());
  EXPECT_EQ(got["pages-1.img"], big);
  EXPECT_EQ(got["pagemap-1.img"], "map");
}

TEST(ImageStreamer, ServesExistingImagesAndAnswersMissingOnes) {
  auto s = StreamerSocket::create(false);
  ASSERT_TRUE(s);
  Result<std::vector<StreamedImage>> result = std::vector<StreamedImage>();
  std::thread server([&] {
    result = serve_images(
        *s, [](const std::string& name) { return name == "inventory.img"; },
        [](const std::string& name, int fd) -> Result<uint64_t> {
          std::string data = "contents of " + name;
          if (auto ok = write_all(fd, data); !ok) return std::unexpected(ok.error());
          return data.size();
        });
  });
  FakeCriu criu(*s, false);
  criu.request("memfd.img");
  EXPECT_FALSE(criu.reply());
  criu.request("inventory.img");
  EXPECT_TRUE(criu.reply());
  UniqueFd in = criu.send_pipe(false);
  auto text = read_all(in.get(), 1 << 20);
  ASSERT_TRUE(text);
  EXPECT_EQ(*text, "contents of inventory.img");
  criu.close();
  server.join();
  ASSERT_TRUE(result) << result.error().message();
  EXPECT_EQ(result->size(), 1u);
}

TEST(ImageStreamer, RefusesNamesThatLeaveTheDirectory) {
  EXPECT_TRUE(valid_image_name("pages-1.img"));
  for (const char* bad : {"", ".", "..", "../etc/passwd", "a/b", "x\n"})
    EXPECT_FALSE(valid_image_name(bad)) << bad;
  auto s = StreamerSocket::create(true);
  ASSERT_TRUE(s);
  bool called = false;
  Result<std::vector<StreamedImage>> result = std::vector<StreamedImage>();
  std::thread server([&] {
    result = capture_images(*s, [&](const std::string&, int) -> Result<uint64_t> {
      called = true;
      return 0;
    });
  });
  FakeCriu criu(*s, true);
  criu.request("../../etc/cron.d/x");
  server.join();
  ASSERT_FALSE(result);
  EXPECT_FALSE(called);
}

TEST(ImageStreamer, CancelEndsAWaitForCriu) {
  auto s = StreamerSocket::create(true);
  ASSERT_TRUE(s);
  std::string dir = s->dir();
  Result<std::vector<StreamedImage>> result = std::vector<StreamedImage>();
  std::thread server([&] {
    result = capture_images(*s, [](const std::string&, int) -> Result<uint64_t> { return 0; });
  });
  s->cancel();
  server.join();
  ASSERT_TRUE(result);
  EXPECT_TRUE(result->empty());
  s = std::unexpected(Error("gone"));
  EXPECT_NE(::access(dir.c_str(), F_OK), 0);  // its directory went with it
}

}  // namespace
}  // namespace arch
