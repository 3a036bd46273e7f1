// PageReceiver: CRIU's dump-side page-server stream parsed, bounded and written as pagemap
// and pages images (plain or sealed chunks), and the admission of its one connection.
#include "criu/page_receiver.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/core.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <array>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "base/file_util.h"
#include "base/hex.h"
#include "criu/page_server.h"
#include "criu/pagemap_image.h"
#include "store/image_stream.h"
#include "store/manifest.h"

namespace arch {
namespace {

constexpr uint32_t kTypePid = 1;
constexpr uint32_t kTypeShmem = 2;
constexpr std::size_t kWriteBytes = 4 << 20;  // large sequential writes

using MdCtx = std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)>;
MdCtx new_sha256() {
  MdCtx ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (ctx && EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) ctx.reset();
  return ctx;
}
std::string final_hex(EVP_MD_CTX* ctx) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(ctx, md, &len) != 1) return {};
  return to_hex(md, len);
}

void put_u32(std::string& out, uint32_t v) {
  char b[4];
  std::memcpy(b, &v, 4);  // CRIU's images: host order (little-endian here)
  out.append(b, 4);
}
void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  out += static_cast<char>(v);
}
// pb_write_one(): u32 length, then the message.
void put_entry(std::string& out, const std::string& msg) {
  put_u32(out, static_cast<uint32_t>(msg.size()));
  out += msg;
}

std::unexpected<Error> refuse(const std::string& why) {
  return std::unexpected(Error(ErrorKind::kInvalidInput, "page receiver: refused: " + why));
}

// Large sequential writes that bypass the page cache where the file system allows it
// (O_DIRECT: the store takes the pages as they arrive, nothing is left dirty for the
// commit's flush): bytes gathered into an aligned buffer, written kWriteBytes at a time;
// the tail is written buffered at the end. Falls back to buffered writes on EINVAL.
class DirectOut {
 public:
  explicit DirectOut(int fd) : fd_(fd) {
    void* p = nullptr;
    if (::posix_memalign(&p, 4096, kWriteBytes) == 0) buf_.reset(static_cast<char*>(p));
    int flags = ::fcntl(fd_, F_GETFL);
    direct_ = buf_ && flags >= 0 && ::fcntl(fd_, F_SETFL, flags | O_DIRECT) == 0;
  }
  Result<void> append(std::string_view d) {
    if (!buf_) return write_all(fd_, d);
    while (!d.empty()) {
      std::size_t n = std::min(d.size(), kWriteBytes - fill_);
      std::memcpy(buf_.get() + fill_, d.data(), n);
      fill_ += n;
      d.remove_prefix(n);
      if (fill_ == kWriteBytes) {
        if (auto ok = flush(); !ok) return ok;
      }
    }
    return {};
  }
  Result<void> finish() {
    if (direct_) buffered();
    if (auto ok = flush(); !ok) return ok;
    return {};
  }

 private:
  void buffered() {
    int flags = ::fcntl(fd_, F_GETFL);
    if (flags >= 0) (void)::fcntl(fd_, F_SETFL, flags & ~O_DIRECT);
    direct_ = false;
  }
  Result<void> flush() {
    if (fill_ == 0) return {};
    std::string_view b(buf_.get(), fill_);
    ssize_t n = direct_ ? ::write(fd_, b.data(), b.size()) : -2;
    if (n == static_cast<ssize_t>(b.size())) {
      fill_ = 0;
      return {};
    }
    if (n >= 0) b.remove_prefix(static_cast<std::size_t>(n));  // short: the rest buffered
    if (direct_) buffered();
    fill_ = 0;
    return write_all(fd_, b);
  }
  struct Free {
    void operator()(char* p) const { std::free(p); }
  };
  int fd_;
  std::unique_ptr<char, Free> buf_;
  std::size_t fill_ = 0;
  bool direct_ = false;
};

// One pages image being written: hashed per chunk as it passes (on the receiving thread),
// stored plain (with the file's SHA-256) or sealed on a worker thread of its own, so that
// receiving and storing overlap. At most kInFlight buffers are in flight.
class PagesOut {
 public:
  static constexpr std::size_t kInFlight = 3;

  static Result<std::unique_ptr<PagesOut>> open(const PageReceiverOptions& o, uint32_t pages_id) {
    std::unique_ptr<PagesOut> p(new PagesOut());
    p->img_.name = fmt::format("pages-{}.img", pages_id);
    p->img_.stored = o.key ? p->img_.name + std::string(kImageStreamSuffix) : p->img_.name;
    int fd = ::openat(o.images_dirfd, p->img_.stored.c_str(),
                      O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) return fail_errno("page receiver: create " + p->img_.stored);
    p->fd_ = UniqueFd(fd);
    if (!p->chunk_ || !p->whole_) return fail("page receiver: sha256 init failed");
    p->out_.emplace(p->fd_.get());
    if (o.key != nullptr) {
      auto w = ImageStreamWriter::create(
          [out = &*p->out_](std::string_view b) { return out->append(b); }, *o.key, o.stream_id,
          p->img_.name, o.compression);
      if (!w) return std::unexpected(w.error());
      p->sealed_.emplace(std::move(*w));
    }
    for (std::size_t i = 0; i < kInFlight; ++i) p->free_.emplace_back();
    p->worker_ = std::thread([raw = p.get()] { raw->work(); });
    return p;
  }
  PagesOut(const PagesOut&) = delete;
  PagesOut& operator=(const PagesOut&) = delete;
  ~PagesOut() { stop(); }

  /// A buffer of `len` bytes to receive into (waits while kInFlight are queued).
  std::string take(std::size_t len) {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [&] { return !free_.empty(); });
    std::string b = std::move(free_.back());
    free_.pop_back();
    lock.unlock();
    b.resize(len);
    return b;
  }

  /// Digests `data` per chunk and queues it to be stored.
  Result<void> write(std::string data) {
    img_.size += data.size();
    std::string_view rest = data;
    while (!rest.empty()) {
      std::size_t take_n = std::min<std::size_t>(rest.size(), kPagesChunkSize - in_chunk_);
      EVP_DigestUpdate(chunk_.get(), rest.data(), take_n);
      in_chunk_ += take_n;
      rest.remove_prefix(take_n);
      if (in_chunk_ == kPagesChunkSize) end_chunk();
    }
    std::lock_guard held(mutex_);
    if (!error_.empty()) return fail(error_);
    queue_.push_back(std::move(data));
    cv_.notify_all();
    return {};
  }

  Result<ReceivedPagesImage> finish() {
    stop();
    if (!error_.empty()) return fail(error_);
    if (in_chunk_ > 0) end_chunk();
    if (sealed_) {
      auto stats = sealed_->finish();
      if (!stats) return std::unexpected(stats.error());
      img_.stored_size = stats->stored_bytes;
      img_.stored_sha256 = stats->sha256;
    } else {
      img_.stored_size = img_.size;
      img_.stored_sha256 = final_hex(whole_.get());
    }
    if (auto ok = out_->finish(); !ok) return std::unexpected(ok.error());
    fd_.reset();
    return img_;
  }

 private:
  PagesOut() : chunk_(new_sha256()), whole_(new_sha256()) {}
  void end_chunk() {
    img_.chunk_sha256.push_back(final_hex(chunk_.get()));
    EVP_DigestInit_ex(chunk_.get(), EVP_sha256(), nullptr);
    in_chunk_ = 0;
  }
  void stop() {
    if (!worker_.joinable()) return;
    {
      std::lock_guard held(mutex_);
      closing_ = true;
      cv_.notify_all();
    }
    worker_.join();
  }
  // The worker: stores each queued buffer in order, then hands it back.
  void work() {
    for (;;) {
      std::unique_lock lock(mutex_);
      cv_.wait(lock, [&] { return !queue_.empty() || closing_; });
      if (queue_.empty()) return;
      std::string b = std::move(queue_.front());
      queue_.pop_front();
      bool failed = !error_.empty();
      lock.unlock();
      Result<void> ok;
      if (!failed) ok = store(b);
      lock.lock();
      if (!ok && error_.empty()) error_ = ok.error().message();
      b.clear();
      free_.push_back(std::move(b));
      cv_.notify_all();
    }
  }
  Result<void> store(std::string_view data) {
    if (sealed_) return sealed_->write(data);
    EVP_DigestUpdate(whole_.get(), data.data(), data.size());
    return out_->append(data);
  }

  ReceivedPagesImage img_;
  UniqueFd fd_;
  MdCtx chunk_, whole_;
  std::size_t in_chunk_ = 0;
  std::optional<DirectOut> out_;  // before sealed_, which writes into it
  std::optional<ImageStreamWriter> sealed_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::string> queue_;
  std::vector<std::string> free_;
  std::string error_;
  bool closing_ = false;
  std::thread worker_;
};

// One open image: its pagemap text so far and its pages.
struct OpenImage {
  uint64_t dst_id = 0;
  std::string pagemap_name;
  std::string pagemap;  // the whole image (small: ~15 bytes per range)
  std::unique_ptr<PagesOut> pages;
  uint64_t next_vaddr = 0;  // entries must be sorted and not overlap
};

class Session {
 public:
  Session(int sk, const PageReceiverOptions& o, const std::atomic<bool>* cancel)
      : sk_(sk), o_(o), cancel_(cancel) {}

  Result<PageReceiverResult> run() {
    // Large reads: a receive buffer of a few page pipes (root may exceed rmem_max), and a
    // timeout so that a cancel is seen.
    int bytes = 16 << 20;
    if (::setsockopt(sk_, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof bytes) != 0)
      (void)::setsockopt(sk_, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
    timeval tv{0, 250000};
    (void)::setsockopt(sk_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    for (;;) {
      std::array<char, kPageServerIovSize> raw{};
      auto got = recv_exact(raw.data(), raw.size(), true);
      if (!got) return std::unexpected(got.error());
      if (!*got) {
        if (flushed_) break;
        return refuse("the connection ended before CRIU flushed (the dump did not finish)");
      }
      PageServerIov iov = decode_page_server_iov(raw);
      ++result_.requests;
      uint32_t cmd = iov.cmd & 0xffff, flags = iov.cmd >> 16;
      if (flushed_ && cmd != kPsIovFlush && cmd != kPsIovFlushNClose)
        return refuse(fmt::format("command {:#x} after the flush", iov.cmd));
      Result<void> ok;
      if (cmd == kPsIovOpen2 && flags == 0) {
        ok = open(iov);
      } else if (cmd == kPsIovAddF) {
        ok = add(iov, flags);
      } else if ((cmd == kPsIovFlush || cmd == kPsIovFlushNClose) && flags == 0) {
        ok = flush();
        if (ok && cmd == kPsIovFlushNClose) break;
      } else {
        return refuse(fmt::format("command {:#x} ({}) is not part of a dump ARCH receives", iov.cmd,
                                  command_name(cmd)));
      }
      if (!ok) return std::unexpected(ok.error());
    }
    return std::move(result_);
  }

 private:
  static const char* command_name(uint32_t cmd) {
    switch (cmd) {
      case kPsIovAdd:
        return "PS_IOV_ADD";
      case kPsIovHole:
        return "PS_IOV_HOLE";
      case kPsIovOpen:
        return "PS_IOV_OPEN";
      case kPsIovOpen2:
        return "PS_IOV_OPEN2 with flags";
      case kPsIovParent:
        return "PS_IOV_PARENT";
      case kPsIovGet:
        return "PS_IOV_GET";
      default:
        return "unknown";
    }
  }

  // Reads exactly `len` bytes; false when the peer closed before the first (only when
  // `eof_ok`).
  Result<bool> recv_exact(char* buf, std::size_t len, bool eof_ok) {
    std::size_t got = 0;
    while (got < len) {
      if (cancel_ != nullptr && cancel_->load()) return fail("page receiver: cancelled");
      // Blocking with a receive timeout (set in run()), whole requests at once: a page
      // pipe's worth of pages in one call instead of one per socket buffer.
      ssize_t n = ::recv(sk_, buf + got, len - got, MSG_WAITALL);
      if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
      if (n < 0) return fail_errno("page receiver: recv");
      if (n == 0) {
        if (got == 0 && eof_ok) return false;
        return refuse(fmt::format("truncated ({} of {} bytes)", got, len));
      }
      got += static_cast<std::size_t>(n);
    }
    return true;
  }

  Result<void> close_current() {
    if (!current_) return {};
    OpenImage& img = *current_;
    auto pages = img.pages->finish();
    if (!pages) return std::unexpected(pages.error());
    int fd = ::openat(o_.images_dirfd, img.pagemap_name.c_str(),
                      O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) return fail_errno("page receiver: create " + img.pagemap_name);
    UniqueFd out(fd);
    if (auto ok = write_all(out.get(), img.pagemap); !ok) return ok;
    result_.pagemaps.emplace_back(img.pagemap_name, img.pagemap.size());
    result_.pages.push_back(std::move(*pages));
    current_.reset();
    return {};
  }

  Result<void> open(const PageServerIov& iov) {
    uint32_t type = static_cast<uint32_t>(iov.dst_id & 0xff);
    uint64_t id = iov.dst_id >> 8;
    if (type != kTypePid && type != kTypeShmem)
      return refuse(fmt::format("PS_IOV_OPEN2 of an unknown image type {}", type));
    if (iov.nr_pages != 0 || iov.vaddr != 0) return refuse("PS_IOV_OPEN2 with pages");
    if (!opened_.insert(iov.dst_id).second)
      return refuse(fmt::format("image {:#x} opened twice", iov.dst_id));
    if (opened_.size() > kMaxReceivedImages)
      return refuse(fmt::format("more than {} images", kMaxReceivedImages));
    if (auto ok = close_current(); !ok) return ok;
    OpenImage img;
    img.dst_id = iov.dst_id;
    img.pagemap_name = type == kTypePid ? fmt::format("pagemap-{}.img", id)
                                        : fmt::format("pagemap-shmem-{}.img", id);
    uint32_t pages_id = ++pages_ids_;
    put_u32(img.pagemap, kCriuImgCommonMagic);
    put_u32(img.pagemap, kCriuPagemapMagic);
    std::string head;
    head += '\x08';  // pagemap_head.pages_id (field 1, varint)
    put_varint(head, pages_id);
    put_entry(img.pagemap, head);
    auto pages = PagesOut::open(o_, pages_id);
    if (!pages) return std::unexpected(pages.error());
    img.pages = std::move(*pages);
    current_.emplace(std::move(img));
    char has_parent = 0;
    return send_all(sk_, &has_parent, 1);
  }

  Result<void> add(const PageServerIov& iov, uint32_t flags) {
    if (!current_ || iov.dst_id != current_->dst_id)
      return refuse(fmt::format("PS_IOV_ADD_F for image {:#x}, which is not open", iov.dst_id));
    if (flags != kPePresent && flags != (kPePresent | kPeLazy))
      return refuse(
          fmt::format("PS_IOV_ADD_F with flags {:#x} (only PE_PRESENT[|PE_LAZY])", flags));
    if (iov.nr_pages == 0 || iov.nr_pages > kMaxReceivePages)
      return refuse(
          fmt::format("PS_IOV_ADD_F of {} pages (1..{})", iov.nr_pages, kMaxReceivePages));
    uint64_t bytes = iov.nr_pages * kCriuPageSize;
    if (iov.vaddr % kCriuPageSize != 0 || iov.vaddr > UINT64_MAX - bytes)
      return refuse(
          fmt::format("PS_IOV_ADD_F at an unaligned or overflowing address {:#x}", iov.vaddr));
    if (iov.vaddr < current_->next_vaddr)
      return refuse(
          fmt::format("PS_IOV_ADD_F at {:#x}: ranges unsorted or overlapping", iov.vaddr));
    if (bytes > o_.max_bytes - std::min(o_.max_bytes, result_.page_bytes))
      return refuse(
          fmt::format("more than {} bytes of pages (the limit of this dump)", o_.max_bytes));
    current_->next_vaddr = iov.vaddr + bytes;
    std::string entry;
    entry += '\x08';
    put_varint(entry, iov.vaddr);
    entry += '\x10';  // compat nr_pages: 0, as CRIU 4.x writes it
    entry += '\0';
    entry += '\x20';
    put_varint(entry, flags);
    entry += '\x28';
    put_varint(entry, iov.nr_pages);
    put_entry(current_->pagemap, entry);
    uint64_t left = bytes;
    while (left > 0) {
      auto n = static_cast<std::size_t>(std::min<uint64_t>(left, kWriteBytes));
      std::string buffer = current_->pages->take(n);
      auto got = recv_exact(buffer.data(), n, false);
      if (!got) return std::unexpected(got.error());
      if (auto ok = current_->pages->write(std::move(buffer)); !ok) return ok;
      left -= n;
    }
    result_.page_bytes += bytes;
    return {};
  }

  Result<void> flush() {
    if (auto ok = close_current(); !ok) return ok;
    flushed_ = true;
    int32_t status = 0;
    return send_all(sk_, &status, sizeof status);
  }

  int sk_;
  const PageReceiverOptions& o_;
  const std::atomic<bool>* cancel_;
  PageReceiverResult result_;
  std::optional<OpenImage> current_;
  std::set<uint64_t> opened_;
  uint32_t pages_ids_ = 0;
  bool flushed_ = false;
};

}  // namespace

Result<PageReceiverResult> receive_pages(int sk, const PageReceiverOptions& options,
                                         const std::atomic<bool>* cancel) {
  if (options.images_dirfd < 0) return fail("page receiver: no images directory");
  if (options.key != nullptr && options.stream_id.empty())
    return fail("page receiver: encrypted without a stream id");
  Session s(sk, options, cancel);
  return s.run();
}

// /proc/self/net/tcp lines: "sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...",
// addresses as hex "ADDR:PORT" (IPv4: the address as the kernel's u32 in host order).
Result<uint64_t> peer_socket_inode(int fd) {
  sockaddr_in ours{}, peer{};
  socklen_t len = sizeof ours;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ours), &len) != 0)
    return fail_errno("getsockname");
  len = sizeof peer;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len) != 0)
    return fail_errno("getpeername");
  if (ours.sin_family != AF_INET || peer.sin_family != AF_INET)
    return fail("page receiver: not an IPv4 connection");
  auto hex = [](const sockaddr_in& a) {
    return fmt::format("{:08X}:{:04X}", a.sin_addr.s_addr, ntohs(a.sin_port));
  };
  std::string want_local = hex(peer), want_remote = hex(ours);
  auto text = read_file("/proc/self/net/tcp", 64 << 20);
  if (!text) return std::unexpected(text.error());
  std::size_t pos = text->find('\n');
  while (pos != std::string::npos && pos + 1 < text->size()) {
    std::size_t end = text->find('\n', pos + 1);
    std::string_view line(text->data() + pos + 1,
                          (end == std::string::npos ? text->size() : end) - pos - 1);
    pos = end;
    std::vector<std::string_view> f;
    std::size_t i = 0;
    while (i < line.size() && f.size() < 10) {
      while (i < line.size() && line[i] == ' ') ++i;
      std::size_t j = line.find(' ', i);
      if (j == std::string_view::npos) j = line.size();
      if (j > i) f.push_back(line.substr(i, j - i));
      i = j;
    }
    if (f.size() < 10 || f[1] != want_local || f[2] != want_remote) continue;
    uint64_t inode = 0;
    for (char c : f[9]) {
      if (c < '0' || c > '9') return fail("page receiver: malformed /proc/net/tcp");
      inode = inode * 10 + static_cast<uint64_t>(c - '0');
    }
    return inode;
  }
  return std::unexpected(Error("page receiver: the peer's socket is not in /proc/net/tcp", ENOENT));
}

bool process_holds_socket(pid_t pid, uint64_t inode) {
  if (inode == 0) return false;
  std::string dir = fmt::format("/proc/{}/fd", pid);
  auto fds = open_file(dir, O_RDONLY | O_DIRECTORY);
  if (!fds) return false;
  auto names = list_directory(fds->get());
  if (!names) return false;
  std::string want = fmt::format("socket:[{}]", inode);
  for (const auto& name : *names) {
    char target[64] = {};
    ssize_t n = ::readlinkat(fds->get(), name.c_str(), target, sizeof target - 1);
    if (n > 0 && std::string_view(target, static_cast<std::size_t>(n)) == want) return true;
  }
  return false;
}

Result<PageReceiverListener> PageReceiverListener::listen() {
  PageReceiverListener l;
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return fail_errno("page receiver: socket");
  l.listen_ = UniqueFd(fd);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
    return fail_errno("page receiver: bind 127.0.0.1:0");
  if (::listen(fd, 16) != 0) return fail_errno("page receiver: listen");
  socklen_t len = sizeof a;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0)
    return fail_errno("page receiver: getsockname");
  l.port_ = ntohs(a.sin_port);
  int p[2];
  if (::pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0) return fail_errno("pipe2");
  l.cancel_read_ = UniqueFd(p[0]);
  l.cancel_write_ = UniqueFd(p[1]);
  return l;
}

std::string PageReceiverListener::address() const {
  return fmt::format("127.0.0.1:{}", port_);
}

void PageReceiverListener::cancel() const {
  char c = 'x';
  (void)!::write(cancel_write_.get(), &c, 1);
}

Result<UniqueFd> PageReceiverListener::accept_admitted(const std::function<bool(int fd)>& admit,
                                                       uint64_t* refused) {
  for (;;) {
    pollfd p[2] = {{listen_.get(), POLLIN, 0}, {cancel_read_.get(), POLLIN, 0}};
    if (::poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return fail_errno("page receiver: poll");
    }
    if (p[1].revents != 0) return UniqueFd();
    if (p[0].revents == 0) continue;
    int fd = ::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED) continue;
      return fail_errno("page receiver: accept");
    }
    UniqueFd conn(fd);
    if (admit(conn.get())) return conn;
    if (refused != nullptr) ++*refused;
    // Closed without a byte read: nothing it sent reaches the checkpoint.
  }
}

}  // namespace arch
