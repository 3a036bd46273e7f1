// LazyPageServer: the private images directory of a verified lazy restore, and the forked
// page-server process with its fail-closed ending.
#include "criu/lazy_page_server.h"

#include <fcntl.h>
#include <fmt/core.h>
#include <openssl/evp.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstring>
#include <map>
#include <set>

#include "base/fd_passing.h"
#include "base/file_util.h"
#include "base/hex.h"
#include "base/process.h"

namespace arch {
namespace {

constexpr std::size_t kCopyBuffer = 1 << 20;

Result<UniqueFd> open_in(int dirfd, const std::string& name, int flags, mode_t mode = 0) {
  int fd = ::openat(dirfd, name.c_str(), flags | O_NOFOLLOW | O_CLOEXEC, mode);
  if (fd < 0) return fail_errno("open " + name);
  return UniqueFd(fd);
}

// Copies images/`name` into `to`, hashing what it copies; it must match `want`.
Result<void> copy_verified(int from, int to, const std::string& name, const ManifestFile& want) {
  auto in = open_in(from, name, O_RDONLY | O_NONBLOCK);
  if (!in) return std::unexpected(in.error());
  struct stat st {};
  if (::fstat(in->get(), &st) != 0 || !S_ISREG(st.st_mode))
    return fail(name + ": not a regular file");
  auto out = open_in(to, name, O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (!out) return std::unexpected(out.error());
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) return fail("sha256 init");
  std::vector<char> buf(kCopyBuffer);
  uint64_t size = 0;
  for (;;) {
    ssize_t n = retry_eintr([&] { return ::read(in->get(), buf.data(), buf.size()); });
    if (n < 0) return fail_errno("read " + name);
    if (n == 0) break;
    size += static_cast<uint64_t>(n);
    if (size > want.size) break;
    EVP_DigestUpdate(ctx.get(), buf.data(), static_cast<std::size_t>(n));
    if (auto ok = write_all(out->get(), std::string_view(buf.data(), static_cast<std::size_t>(n)));
        !ok)
      return std::unexpected(ok.error().wrap("copy " + name));
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx.get(), md, &len);
  if (size != want.size || to_hex(md, len) != want.sha256) {
    return std::unexpected(Error(
        fmt::format("images/{} does not match the sealed manifest (as copied for the lazy restore)",
                    name),
        EBADMSG));
  }
  return {};
}

// The number in "<prefix><N><suffix>", if the name has that shape.
std::optional<uint64_t> number_in(std::string_view name, std::string_view prefix,
                                  std::string_view suffix) {
  if (!name.starts_with(prefix) || !name.ends_with(suffix) ||
      name.size() <= prefix.size() + suffix.size())
    return std::nullopt;
  auto digits = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
  if (ec != std::errc() || end != digits.data() + digits.size()) return std::nullopt;
  return v;
}

// Closes every fd but `keep` (and stdio).
void close_all_but(std::vector<int> keep) {
  std::sort(keep.begin(), keep.end());
  unsigned from = 3;
  for (int fd : keep) {
    if (fd < 3) continue;
    if (static_cast<unsigned>(fd) > from)
      ::syscall(SYS_close_range, from, static_cast<unsigned>(fd - 1), 0U);
    from = static_cast<unsigned>(fd) + 1;
  }
  ::syscall(SYS_close_range, from, ~0U, 0U);
}

}  // namespace

Result<PageServer> prepare_served_images(const ServedPages& src, const std::string& dir) {
  if (src.manifest == nullptr) return fail("lazy restore: no manifest");
  auto from = open_file(src.checkpoint + "/images", O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  if (!from) return std::unexpected(from.error());
  if (::mkdir(dir.c_str(), 0700) != 0) return fail_errno("mkdir " + dir);
  auto to = open_file(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  if (!to) return std::unexpected(to.error());
  // 1. Every image but the pages, copied and checked.
  std::map<std::string, const ManifestFile*> pages;
  std::map<std::string, const FileChunks*> chunks_of;
  for (const auto& f : src.manifest->files) {
    if (!f.path.starts_with("images/")) continue;
    std::string name = f.path.substr(7);
    if (name.find('/') != std::string::npos)
      return fail("lazy restore: unexpected image in a subdirectory: " + f.path);
    if (is_pages_image_path(f.path)) {
      auto c = src.manifest->chunks.find(f.path);
      if (c == src.manifest->chunks.end()) return fail(f.path + ": no chunk digests");
      pages.emplace(name, &f);
      chunks_of.emplace(name, &c->second);
      continue;
    }
    if (auto ok = copy_verified(from->get(), to->get(), name, f); !ok)
      return std::unexpected(ok.error());
  }
  // 2. The pagemaps (from the checked copies): the tasks' for the server, and every
  //    pagemap's non-lazy ranges for the chunks the restore reads itself.
  auto names = list_directory(to->get());
  if (!names) return std::unexpected(names.error());
  std::map<uint64_t, Pagemap> tasks;
  std::map<uint64_t, std::set<uint64_t>> needed;  // pages_id -> chunk indices
  std::map<uint64_t, uint64_t> used;              // pages_id -> bytes its pagemap uses
  for (const auto& name : *names) {
    auto pid = number_in(name, "pagemap-", ".img");
    bool shmem = number_in(name, "pagemap-shmem-", ".img").has_value();
    if (!pid && !shmem) continue;
    auto fd = open_in(to->get(), name, O_RDONLY);
    if (!fd) return std::unexpected(fd.error());
    auto bytes = read_all(fd->get(), kMaxPagemapImageBytes);
    if (!bytes) return std::unexpected(bytes.error().wrap(name));
    if (bytes->size() == 8) continue;  // magics alone: CRIU's empty image, no pages
    auto map = parse_pagemap_image(*bytes);
    if (!map) return std::unexpected(map.error().wrap(name));
    auto file = pages.find(fmt::format("pages-{}.img", map->pages_id));
    if (file == pages.end()) return fail(fmt::format("{}: no pages-{}.img", name, map->pages_id));
    if (used.contains(map->pages_id))
      return fail(fmt::format("pages-{}.img used twice", map->pages_id));
    used[map->pages_id] = map->present_bytes;
    if (map->present_bytes > file->second->size)
      return fail(fmt::format("{}: maps {} bytes, pages-{}.img holds {}", name, map->present_bytes,
                              map->pages_id, file->second->size));
    uint64_t chunk = chunks_of.at(file->first)->size;
    for (const auto& r : map->ranges) {
      if (!r.present() || r.lazy()) continue;
      uint64_t end = r.offset + r.nr_pages * kCriuPageSize;
      for (uint64_t c = r.offset / chunk; c * chunk < end; ++c) needed[map->pages_id].insert(c);
    }
    if (pid) tasks.emplace(*pid, std::move(*map));
  }
  // 3. The pages images: sparse copies with the needed chunks (checked), and the verified
  //    readers the server keeps.
  std::map<uint32_t, VerifiedPagesFile> served;
  for (const auto& [name, f] : pages) {
    auto id = number_in(name, "pages-", ".img");
    if (!id || *id > UINT32_MAX) return fail("lazy restore: unexpected pages image " + name);
    const FileChunks& c = *chunks_of.at(name);
    Result<VerifiedPagesFile> vf = fail("unset");
    if (src.page_source) {
      auto source = src.page_source(name);
      if (!source) return std::unexpected(source.error());
      vf = VerifiedPagesFile::make(std::move(*source), name, f->size, c.size, c.sha256);
    } else {
      auto in = open_in(from->get(), name, O_RDONLY | O_NONBLOCK);
      if (!in) return std::unexpected(in.error());
      vf = VerifiedPagesFile::make(std::move(*in), name, f->size, c.size, c.sha256);
    }
    if (!vf) return std::unexpected(vf.error());
    auto out = open_in(to->get(), name, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (!out) return std::unexpected(out.error());
    if (::ftruncate(out->get(), static_cast<off_t>(f->size)) != 0)
      return fail_errno("truncate " + name);
    for (uint64_t index : needed[*id]) {
      auto data = vf->chunk(index);
      if (!data) return std::unexpected(data.error());
      const auto& bytes = **data;
      std::size_t done = 0;
      while (done < bytes.size()) {
        ssize_t n = ::pwrite(out->get(), bytes.data() + done, bytes.size() - done,
                             static_cast<off_t>(index * c.size + done));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return fail_errno("write " + name);
        done += static_cast<std::size_t>(n);
      }
    }
    served.emplace(static_cast<uint32_t>(*id), std::move(*vf));
  }
  return PageServer(std::move(tasks), std::move(served));
}

std::string run_page_server(PageServer& server, int sk, int control,
                            const std::function<void(const std::string&)>& on_refusal) {
  UniqueFd container;
  bool control_open = control >= 0;
  bool peer_open = true;
  std::string refusal;
  auto take_control = [&] {
    auto fd = receive_fd(control);
    if (fd && *fd) {
      container = std::move(*fd);
    } else {
      control_open = false;
    }
  };
  // Reads and drops the daemon's requests unanswered (it must never fail on a full
  // socket). Its close (sent only once every restored process is gone) ends the session.
  auto drain = [&] {
    std::array<char, kPageServerIovSize> raw{};
    ssize_t n = retry_eintr([&] { return ::recv(sk, raw.data(), raw.size(), MSG_WAITALL); });
    if (n != static_cast<ssize_t>(raw.size())) {
      peer_open = false;
      return;
    }
    uint32_t cmd = decode_page_server_iov(raw).cmd;
    if (cmd == kPsIovFlush || cmd == kPsIovFlushNClose) peer_open = false;
  };
  auto wait = [&](int extra_fd, int timeout_ms) -> bool {  // true: extra_fd readable
    pollfd fds[3] = {{peer_open ? sk : -1, POLLIN, 0},
                     {control_open ? control : -1, POLLIN, 0},
                     {extra_fd, POLLIN, 0}};
    int n = ::poll(fds, 3, timeout_ms);
    if (n <= 0) return false;
    if (fds[0].revents != 0) drain();
    if (fds[1].revents != 0) take_control();
    return fds[2].revents != 0;
  };
  for (;;) {
    pollfd fds[2] = {{sk, POLLIN, 0}, {control_open ? control : -1, POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      refusal = "page server: poll: " + std::string(std::strerror(errno));
      break;
    }
    if (fds[1].revents != 0) take_control();
    if (fds[0].revents == 0) continue;
    auto more = server.serve_one(sk);
    if (more && *more) continue;
    if (more) {
      return fmt::format("page server: {} pages served in {} requests; the lazy-pages daemon {}",
                         server.stats().pages_served, server.stats().requests,
                         server.stats().closed_by_command ? "closed the session" : "hung up");
    }
    refusal = more.error().message();
    break;
  }
  // Fail closed: nothing more is answered; the container goes before the connection does.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(10);
  while (!container && control_open && std::chrono::steady_clock::now() < deadline) {
    (void)wait(-1, 1000);
  }
  std::string outcome;
  bool dead = false;
  if (container) {
    (void)signal_pidfd(container.get(), SIGKILL);
    auto gone = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!dead && std::chrono::steady_clock::now() < gone) dead = wait(container.get(), 1000);
    outcome = dead ? "the container was killed (SIGKILL to its init)"
                   : "the container was sent SIGKILL but had not ended after 60 s";
  } else {
    outcome = "the container was not known yet: its restore is left blocked on the page";
  }
  std::string message = refusal + "; nothing more was served and " + outcome;
  if (on_refusal) on_refusal(message);
  // The container gone, the connection may go (the daemon then ends; it would otherwise
  // wait for an answer to its close). Else it is held, drained, until the daemon hangs up.
  while (!dead && peer_open) (void)wait(-1, -1);
  return message;
}

Result<PageServerProcess> PageServerProcess::start(
    PageServer server, UniqueFd sk, const std::string& log_path,
    std::function<void(const std::string&)> on_refusal) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
    return fail_errno("socketpair");
  UniqueFd ours(sv[0]), theirs(sv[1]);
  auto log = open_file(log_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
  if (!log) return std::unexpected(log.error());
  pid_t pid = ::fork();
  if (pid < 0) return fail_errno("fork the page server");
  if (pid == 0) {
    ::setsid();
    ::prctl(PR_SET_NAME, "arch-pagesrv");
    sigset_t all;
    sigemptyset(&all);
    ::sigprocmask(SIG_SETMASK, &all, nullptr);
    // Its death would let the lazy-pages daemon go and the kernel fill missing pages with
    // zeros: a write to a closed connection (a source node's, a TLS alert) must never end it.
    ::signal(SIGPIPE, SIG_IGN);
    int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    for (int fd = 0; fd < 3; ++fd) ::dup2(null, fd);
    std::vector<int> keep = server.fds();
    keep.insert(keep.end(), {sk.get(), theirs.get(), log->get()});
    close_all_but(keep);
    bool reported = false;
    auto report = [&](const std::string& why) {
      (void)write_all(log->get(), why + "\n");  // before anything else can go wrong
      reported = true;
      if (on_refusal) on_refusal(why);
    };
    std::string outcome = run_page_server(server, sk.get(), theirs.get(), report);
    if (!reported) (void)write_all(log->get(), outcome + "\n");
    ::_exit(reported ? 1 : 0);
  }
  auto pidfd = open_pidfd(pid);
  if (!pidfd) {
    ::kill(pid, SIGKILL);
    (void)::waitpid(pid, nullptr, 0);
    return std::unexpected(pidfd.error());
  }
  return PageServerProcess(pid, std::move(*pidfd), std::move(ours));
}

Result<void> PageServerProcess::hand_over(pid_t container_init) {
  auto fd = open_pidfd(container_init);
  if (!fd) return std::unexpected(fd.error().wrap("the restored container's init"));
  auto sent = send_fd(control_.get(), fd->get());
  if (!sent) return std::unexpected(sent.error().wrap("send the container to the page server"));
  return {};
}

bool PageServerProcess::ended_cleanly() {
  if (pid_ <= 0) return false;
  int status = 0;
  // Its end of the control socket is closed as it exits: give it a moment to be reaped.
  for (int i = 0;; ++i) {
    pid_t got = ::waitpid(pid_, &status, WNOHANG);
    if (got == pid_) break;
    if (got < 0 && errno != EINTR) return false;
    if (i >= 200) return false;
    ::usleep(5000);
  }
  pid_ = 0;
  pidfd_.reset();
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

void PageServerProcess::release() {
  pidfd_.reset();
  control_.reset();
}

void PageServerProcess::stop() {
  if (!pidfd_) return;
  (void)signal_pidfd(pidfd_.get(), SIGKILL);
  while (::waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
  }
  pidfd_.reset();
  control_.reset();
}

}  // namespace arch
