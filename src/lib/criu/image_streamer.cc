// ImageStreamer: CRIU's image-streaming protocol over a unix socket, one thread per image
// pipe (protocol in the header).
#include "criu/image_streamer.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>

#include "base/fd_passing.h"
#include "base/file_util.h"

namespace arch {
namespace {

constexpr const char* kCaptureName = "streamer-capture.sock";
constexpr const char* kServeName = "streamer-serve.sock";
constexpr uint32_t kMaxRequestBytes = 4096;

// Waits until `fd` is readable; false when cancelled first.
Result<bool> wait_readable(int fd, int cancel_fd) {
  for (;;) {
    pollfd fds[2] = {{fd, POLLIN, 0}, {cancel_fd, POLLIN, 0}};
    int r = ::poll(fds, 2, -1);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return fail_errno("image streamer: poll");
    if (fds[0].revents != 0) return true;
    if (fds[1].revents != 0) return false;
  }
}

// Reads exactly n bytes; false on EOF before the first byte.
Result<bool> read_exact(int fd, char* buf, std::size_t n) {
  std::size_t got = 0;
  while (got < n) {
    ssize_t r = ::read(fd, buf + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return fail_errno("image streamer: read request");
    if (r == 0) {
      if (got == 0) return false;
      return fail("image streamer: CRIU closed the connection mid-request");
    }
    got += static_cast<std::size_t>(r);
  }
  return true;
}

// The file name of an ImgStreamerRequestEntry (field 1, length-delimited).
Result<std::string> parse_request(std::string_view msg) {
  if (msg.size() < 2 || msg[0] != 0x0a) return fail("image streamer: malformed request");
  std::size_t i = 1, len = 0;
  for (int shift = 0; i < msg.size() && shift < 35; shift += 7) {
    auto b = static_cast<unsigned char>(msg[i++]);
    len |= static_cast<std::size_t>(b & 0x7f) << shift;
    if ((b & 0x80) == 0) {
      if (i + len != msg.size()) break;
      std::string name(msg.substr(i, len));
      if (!valid_image_name(name)) return fail("image streamer: refused image name");
      return name;
    }
  }
  return fail("image streamer: malformed request");
}

// The next request on the connection; empty optional at EOF.
Result<std::optional<std::string>> next_request(int conn) {
  char len_bytes[4];
  auto got = read_exact(conn, len_bytes, sizeof len_bytes);
  if (!got) return std::unexpected(got.error());
  if (!*got) return std::optional<std::string>();
  uint32_t len = 0;
  std::memcpy(&len, len_bytes, sizeof len);
  if (len == 0 || len > kMaxRequestBytes) return fail("image streamer: malformed request");
  std::string msg(len, '\0');
  auto body = read_exact(conn, msg.data(), len);
  if (!body) return std::unexpected(body.error());
  if (!*body) return fail("image streamer: CRIU closed the connection mid-request");
  auto name = parse_request(msg);
  if (!name) return std::unexpected(name.error());
  return std::optional<std::string>(std::move(*name));
}

// The pipe end CRIU passes (SCM_RIGHTS with one dummy byte).
Result<UniqueFd> receive_image_pipe(int conn) {
  auto fd = receive_fd(conn);
  if (!fd) return std::unexpected(fd.error().wrap("image streamer: receive the image pipe"));
  if (!*fd) return fail("image streamer: CRIU sent no image pipe");
  return fd;
}

Result<void> send_exists(int conn, bool exists) {
  const char reply[6] = {2, 0, 0, 0, 0x08, static_cast<char>(exists ? 1 : 0)};
  return write_all(conn, std::string_view(reply, sizeof reply));
}

// The pipe threads of one connection and their outcome.
class PipeThreads {
 public:
  ~PipeThreads() { join(); }
  void start(std::string name, UniqueFd fd,
             const std::function<Result<uint64_t>(const std::string&, int)>& work) {
    std::size_t slot = 0;
    {
      std::lock_guard lock(mutex_);
      slot = images_.size();
      images_.push_back({name, 0});
    }
    threads_.emplace_back([this, slot, name = std::move(name), fd = std::move(fd), &work] {
      // A write into a pipe CRIU closed early must fail with EPIPE, not end the process.
      sigset_t pipe_set;
      sigemptyset(&pipe_set);
      sigaddset(&pipe_set, SIGPIPE);
      pthread_sigmask(SIG_BLOCK, &pipe_set, nullptr);
      auto r = work(name, fd.get());
      std::lock_guard lock(mutex_);
      if (r) {
        images_[slot].bytes = *r;
      } else if (!error_) {
        error_ = r.error().wrap("image " + name);
      }
    });
  }
  void join() {
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
  }
  Result<std::vector<StreamedImage>> result() {
    join();
    if (error_) return std::unexpected(*error_);
    return images_;
  }

 private:
  std::mutex mutex_;
  std::vector<std::thread> threads_;
  std::vector<StreamedImage> images_;
  std::optional<Error> error_;
};

Result<UniqueFd> accept_criu(const StreamerSocket& socket) {
  auto ready = wait_readable(socket.fd(), socket.cancel_fd());
  if (!ready) return std::unexpected(ready.error());
  if (!*ready) return UniqueFd();
  UniqueFd conn(::accept4(socket.fd(), nullptr, nullptr, SOCK_CLOEXEC));
  if (!conn) return fail_errno("image streamer: accept");
  // Only root (CRIU runs as root) may speak for CRIU.
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(conn.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || cred.uid != 0)
    return fail("image streamer: refused a connection not from root");
  return conn;
}

}  // namespace

bool valid_image_name(std::string_view name) {
  if (name.empty() || name.size() > 255 || name == "." || name == "..") return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

Result<StreamerSocket> StreamerSocket::create(bool capture) {
  StreamerSocket s;
  char dir[] = "/tmp/arch-stream-XXXXXX";
  if (::mkdtemp(dir) == nullptr) return fail_errno("image streamer: mkdtemp");
  s.dir_ = dir;  // mkdtemp makes it 0700
  s.path_ = s.dir_ + "/" + (capture ? kCaptureName : kServeName);
  s.listen_ = UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s.listen_) return fail_errno("image streamer: socket");
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (s.path_.size() >= sizeof addr.sun_path) return fail("image streamer: socket path too long");
  std::memcpy(addr.sun_path, s.path_.c_str(), s.path_.size() + 1);
  if (::bind(s.listen_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    return fail_errno("image streamer: bind " + s.path_);
  if (::listen(s.listen_.get(), 4) != 0) return fail_errno("image streamer: listen");
  s.cancel_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!s.cancel_) return fail_errno("image streamer: eventfd");
  return s;
}

StreamerSocket::StreamerSocket(StreamerSocket&& other) noexcept
    : dir_(std::move(other.dir_)),
      path_(std::move(other.path_)),
      listen_(std::move(other.listen_)),
      cancel_(std::move(other.cancel_)) {
  other.dir_.clear();
  other.path_.clear();
}

StreamerSocket::~StreamerSocket() {
  if (!path_.empty()) ::unlink(path_.c_str());
  if (!dir_.empty()) ::rmdir(dir_.c_str());
}

void StreamerSocket::cancel() const {
  uint64_t one = 1;
  (void)!::write(cancel_.get(), &one, sizeof one);
}

Result<std::vector<StreamedImage>> capture_images(const StreamerSocket& socket,
                                                  const ImageConsumer& consume) {
  auto conn = accept_criu(socket);
  if (!conn) return std::unexpected(conn.error());
  if (!*conn) return std::vector<StreamedImage>();
  PipeThreads threads;
  for (;;) {
    auto name = next_request(conn->get());
    if (!name) return std::unexpected(name.error());
    if (!*name) break;
    auto fd = receive_image_pipe(conn->get());
    if (!fd) return std::unexpected(fd.error());
    threads.start(**name, std::move(*fd), consume);
  }
  return threads.result();
}

Result<std::vector<StreamedImage>> serve_images(const StreamerSocket& socket,
                                                const ImageExists& exists,
                                                const ImageProducer& produce) {
  auto conn = accept_criu(socket);
  if (!conn) return std::unexpected(conn.error());
  if (!*conn) return std::vector<StreamedImage>();
  PipeThreads threads;
  for (;;) {
    auto name = next_request(conn->get());
    if (!name) return std::unexpected(name.error());
    if (!*name) break;
    bool present = exists(**name);
    if (auto sent = send_exists(conn->get(), present); !sent) return std::unexpected(sent.error());
    if (!present) continue;
    auto fd = receive_image_pipe(conn->get());
    if (!fd) return std::unexpected(fd.error());
    threads.start(**name, std::move(*fd), produce);
  }
  return threads.result();
}

}  // namespace arch
