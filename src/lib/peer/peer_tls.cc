// PeerTls: TLS contexts, the framed connection and the listener. See peer_tls.h.
#include "peer/peer_tls.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/core.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

namespace arch {
namespace {

std::string ssl_error_text() {
  unsigned long e = ERR_get_error();
  std::string out;
  while (e != 0) {
    if (!out.empty()) out += "; ";
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    out += buf;
    e = ERR_get_error();
  }
  return out.empty() ? "connection closed" : out;
}

void set_socket_timeout(int fd, std::chrono::milliseconds timeout) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

// Connects within `timeout` (a non-blocking connect, then blocking again).
Result<UniqueFd> dial(const std::string& host, int port, std::chrono::milliseconds timeout) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  std::string service = std::to_string(port);
  if (int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &res); rc != 0) {
    return fail(ErrorKind::kUnavailable, fmt::format("resolve {}: {}", host, gai_strerror(rc)));
  }
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> owned(res, freeaddrinfo);
  Error last(ErrorKind::kUnavailable, "no address");
  for (addrinfo* a = res; a != nullptr; a = a->ai_next) {
    UniqueFd fd(::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd) return fail_errno("socket");
    if (::connect(fd.get(), a->ai_addr, a->ai_addrlen) != 0 && errno != EINPROGRESS) {
      last =
          errno_error(fmt::format("connect {}:{}", host, port)).with_kind(ErrorKind::kUnavailable);
      continue;
    }
    pollfd p{fd.get(), POLLOUT, 0};
    int n = 0;
    do {
      n = ::poll(&p, 1, static_cast<int>(timeout.count()));
    } while (n < 0 && errno == EINTR);
    if (n == 0) {
      last = Error(ErrorKind::kTimeout, fmt::format("connect {}:{}: no answer within {} ms", host,
                                                    port, timeout.count()));
      continue;
    }
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (n < 0 || err != 0) {
      last = Error(fmt::format("connect {}:{}", host, port), n < 0 ? errno : err)
                 .with_kind(ErrorKind::kUnavailable);
      continue;
    }
    int flags = ::fcntl(fd.get(), F_GETFL);
    ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK);
    set_socket_timeout(fd.get(), timeout);
    return fd;
  }
  return std::unexpected(last);
}

// While alive, a write to a connection the peer closed fails with EPIPE in this thread
// instead of ending the process (archctl does not ignore SIGPIPE): the signal is blocked
// and one raised meanwhile is taken before the mask is put back.
class SigpipeGuard {
 public:
  SigpipeGuard() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
  }
  ~SigpipeGuard() {
    int saved = errno;
    sigset_t pending;
    sigpending(&pending);
    if (sigismember(&pending, SIGPIPE) == 1) {
      timespec zero{};
      while (sigtimedwait(&pipe_, nullptr, &zero) == SIGPIPE) {
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
    errno = saved;
  }
  SigpipeGuard(const SigpipeGuard&) = delete;
  SigpipeGuard& operator=(const SigpipeGuard&) = delete;

 private:
  sigset_t pipe_{}, old_{};
};

}  // namespace

Result<std::pair<std::string, int>> split_host_port(const std::string& address) {
  auto colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0) return fail("\"" + address + "\" is not host:port");
  std::string host = address.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  int port = -1;
  std::string p = address.substr(colon + 1);
  if (p.empty() || p.size() > 5 || !std::all_of(p.begin(), p.end(), ::isdigit)) {
    return fail("\"" + address + "\": bad port");
  }
  port = std::stoi(p);
  if (port > 65535) return fail("\"" + address + "\": bad port");
  return std::pair{host, port};
}

Result<SslCtxPtr> make_peer_context(const PeerIdentity& identity, bool server) {
  SslCtxPtr ctx(SSL_CTX_new(server ? TLS_server_method() : TLS_client_method()), SslCtxFree{});
  if (!ctx) return fail("TLS context: " + ssl_error_text());
  SSL_CTX* c = ctx.get();
  if (SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_max_proto_version(c, TLS1_3_VERSION) != 1) {
    return fail("TLS 1.3: " + ssl_error_text());
  }
  if (SSL_CTX_use_certificate(c, identity.cert.get()) != 1 ||
      SSL_CTX_use_PrivateKey(c, identity.key.get()) != 1 || SSL_CTX_check_private_key(c) != 1) {
    return fail("the node's TLS identity: " + ssl_error_text());
  }
  // Only the derived CAs: a fresh store, never the system's.
  X509_STORE* store = X509_STORE_new();
  if (store == nullptr) return fail("certificate store");
  for (const auto& ca : identity.trusted) X509_STORE_add_cert(store, ca.get());
  SSL_CTX_set_cert_store(c, store);
  SSL_CTX_set_verify(c, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  SSL_CTX_set_verify_depth(c, 1);
  SSL_CTX_set_options(c, SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_mode(c, SSL_MODE_AUTO_RETRY);
  return ctx;
}

PeerConnection::~PeerConnection() {
  close();
}

void PeerConnection::close() {
  SigpipeGuard no_sigpipe;
  if (ssl_ && !broken_) (void)SSL_shutdown(ssl_.get());
  ssl_.reset();
  fd_.reset();
}

void PeerConnection::set_timeout(std::chrono::milliseconds timeout) {
  if (fd_) set_socket_timeout(fd_.get(), timeout);
}

Error PeerConnection::io_error(const char* what, int ret) {
  broken_ = true;
  int err = SSL_get_error(ssl_.get(), ret);
  int saved = errno;
  std::string detail = ssl_error_text();
  if (err == SSL_ERROR_ZERO_RETURN) {
    return Error(ErrorKind::kUnavailable, fmt::format("{} {}: closed by the peer", what, peer_));
  }
  if (err == SSL_ERROR_SYSCALL && (saved == EAGAIN || saved == EWOULDBLOCK)) {
    return Error(ErrorKind::kTimeout, fmt::format("{} {}: timed out", what, peer_));
  }
  if (err == SSL_ERROR_SYSCALL && saved != 0) {
    return Error(fmt::format("{} {}", what, peer_), saved).with_kind(ErrorKind::kUnavailable);
  }
  return Error(ErrorKind::kUnavailable, fmt::format("{} {}: {}", what, peer_, detail));
}

Result<PeerConnection> PeerConnection::connect(const SslCtxPtr& ctx, const std::string& node,
                                               const std::string& host, int port,
                                               std::chrono::milliseconds timeout) {
  auto fd = dial(host, port, timeout);
  if (!fd) return std::unexpected(fd.error().wrap("peer " + node));
  PeerConnection c;
  c.ctx_ = ctx;
  c.peer_ = node;
  c.fd_ = std::move(*fd);
  c.ssl_.reset(SSL_new(ctx.get()));
  if (!c.ssl_ || SSL_set_fd(c.ssl_.get(), c.fd_.get()) != 1)
    return fail("TLS: " + ssl_error_text());
  // The server must be the node we dialled: its certificate's DNS name, exactly.
  SSL_set_hostflags(c.ssl_.get(), X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  if (SSL_set1_host(c.ssl_.get(), node.c_str()) != 1) return fail("TLS: expected name");
  ERR_clear_error();
  errno = 0;
  int ret = 0;
  {
    SigpipeGuard no_sigpipe;
    ret = SSL_connect(c.ssl_.get());
  }
  if (ret != 1) {
    long verify = SSL_get_verify_result(c.ssl_.get());
    Error e = c.io_error("TLS handshake with", ret);
    if (verify != X509_V_OK) {
      e = Error(ErrorKind::kPermission, fmt::format("TLS handshake with {}: its certificate is "
                                                    "refused: {}",
                                                    node, X509_verify_cert_error_string(verify)));
    }
    return std::unexpected(e.wrap(fmt::format("peer {} ({}:{})", node, host, port)));
  }
  return c;
}

Result<PeerConnection> PeerConnection::accept(const SslCtxPtr& ctx, UniqueFd fd,
                                              const std::vector<std::string>& allowed,
                                              std::chrono::milliseconds timeout) {
  PeerConnection c;
  c.ctx_ = ctx;
  c.peer_ = "client";
  c.fd_ = std::move(fd);
  set_socket_timeout(c.fd_.get(), timeout);
  c.ssl_.reset(SSL_new(ctx.get()));
  if (!c.ssl_ || SSL_set_fd(c.ssl_.get(), c.fd_.get()) != 1)
    return fail("TLS: " + ssl_error_text());
  ERR_clear_error();
  errno = 0;
  int ret = 0;
  {
    SigpipeGuard no_sigpipe;
    ret = SSL_accept(c.ssl_.get());
  }
  if (ret != 1) {
    long verify = SSL_get_verify_result(c.ssl_.get());
    if (verify != X509_V_OK) {
      c.broken_ = true;
      return fail(ErrorKind::kPermission,
                  fmt::format("TLS handshake: the client's certificate is refused: {}",
                              X509_verify_cert_error_string(verify)));
    }
    return std::unexpected(c.io_error("TLS handshake with", ret));
  }
  X509* cert = SSL_get0_peer_certificate(c.ssl_.get());
  std::string name = peer_certificate_name(cert);
  if (name.empty() || !validate_node_name(name) ||
      X509_check_host(cert, name.c_str(), name.size(), 0, nullptr) != 1) {
    return fail(ErrorKind::kPermission, "the client's certificate names no valid node");
  }
  if (!allowed.empty() && std::find(allowed.begin(), allowed.end(), name) == allowed.end()) {
    return fail(ErrorKind::kPermission,
                "node " + name + " is not one of this node's peers ([peers] nodes)");
  }
  c.peer_ = name;
  return c;
}

Result<void> PeerConnection::write_bytes(const char* data, std::size_t n) {
  if (broken_ || !ssl_)
    return fail(ErrorKind::kUnavailable, "connection to " + peer_ + " is closed");
  SigpipeGuard no_sigpipe;
  while (n > 0) {
    ERR_clear_error();
    errno = 0;
    int chunk = static_cast<int>(std::min<std::size_t>(n, 1 << 20));
    int ret = SSL_write(ssl_.get(), data, chunk);
    if (ret <= 0) return std::unexpected(io_error("send to", ret));
    data += ret;
    n -= static_cast<std::size_t>(ret);
  }
  return {};
}

Result<void> PeerConnection::read_bytes(char* data, std::size_t n) {
  if (broken_ || !ssl_)
    return fail(ErrorKind::kUnavailable, "connection to " + peer_ + " is closed");
  SigpipeGuard no_sigpipe;  // a read may write (an alert on a connection cut short)
  while (n > 0) {
    ERR_clear_error();
    errno = 0;
    int chunk = static_cast<int>(std::min<std::size_t>(n, 1 << 20));
    int ret = SSL_read(ssl_.get(), data, chunk);
    if (ret <= 0) return std::unexpected(io_error("receive from", ret));
    data += ret;
    n -= static_cast<std::size_t>(ret);
  }
  return {};
}

Result<void> PeerConnection::send(FrameType type, std::string_view payload) {
  std::size_t cap = type == FrameType::kJson ? kMaxJsonFrame : kMaxBulkFrame;
  if (payload.size() > cap) {
    return fail(ErrorKind::kInvalidInput,
                fmt::format("a frame of {} bytes is over the limit of {}", payload.size(), cap));
  }
  char header[5];
  header[0] = static_cast<char>(type);
  auto n = static_cast<uint32_t>(payload.size());
  for (int i = 0; i < 4; ++i) header[1 + i] = static_cast<char>((n >> (24 - 8 * i)) & 0xff);
  std::string frame(header, sizeof header);
  frame.append(payload);
  return write_bytes(frame.data(), frame.size());
}

Result<void> PeerConnection::send_json(const nlohmann::json& value) {
  return send(FrameType::kJson, value.dump());
}

Result<Frame> PeerConnection::receive() {
  unsigned char header[5];
  if (auto ok = read_bytes(reinterpret_cast<char*>(header), sizeof header); !ok) {
    return std::unexpected(ok.error());
  }
  uint32_t n = (uint32_t{header[1]} << 24) | (uint32_t{header[2]} << 16) |
               (uint32_t{header[3]} << 8) | uint32_t{header[4]};
  Frame f;
  if (header[0] == static_cast<unsigned char>(FrameType::kJson)) {
    f.type = FrameType::kJson;
  } else if (header[0] == static_cast<unsigned char>(FrameType::kBulk)) {
    f.type = FrameType::kBulk;
  } else {
    broken_ = true;
    return fail(
        ErrorKind::kInvalidInput,
        fmt::format("frame of unknown type {} from {}: connection closed", header[0], peer_));
  }
  std::size_t cap = f.type == FrameType::kJson ? kMaxJsonFrame : kMaxBulkFrame;
  if (n > cap) {
    broken_ = true;
    return fail(ErrorKind::kInvalidInput,
                fmt::format("frame of {} bytes from {} is over the limit of {}: connection closed",
                            n, peer_, cap));
  }
  f.payload.resize(n);
  if (auto ok = read_bytes(f.payload.data(), n); !ok) return std::unexpected(ok.error());
  return f;
}

Result<nlohmann::json> PeerConnection::receive_json() {
  auto f = receive();
  if (!f) return std::unexpected(f.error());
  if (f->type != FrameType::kJson) {
    return fail(ErrorKind::kInvalidInput, "expected a JSON frame from " + peer_);
  }
  auto j = nlohmann::json::parse(f->payload, nullptr, false);
  if (j.is_discarded()) return fail(ErrorKind::kInvalidInput, "malformed JSON from " + peer_);
  return j;
}

Result<nlohmann::json> PeerConnection::call(const nlohmann::json& request) {
  if (auto ok = send_json(request); !ok) return std::unexpected(ok.error());
  auto reply = receive_json();
  if (!reply) return reply;
  if (reply->is_object() && reply->contains("error") && (*reply)["error"].is_string()) {
    return fail(fmt::format("{}: {}", peer_, (*reply)["error"].get<std::string>()));
  }
  return reply;
}

// ------------------------------------------------------------------ server

PeerServer::PeerServer(SslCtxPtr ctx, std::vector<std::string> allowed,
                       std::chrono::milliseconds timeout, Handler handler, Logger log)
    : ctx_(std::move(ctx)),
      allowed_(std::move(allowed)),
      timeout_(timeout),
      handler_(std::move(handler)),
      log_(std::move(log)) {}

PeerServer::~PeerServer() {
  stop();
}

Result<void> PeerServer::start(const std::string& address) {
  auto hp = split_host_port(address);
  if (!hp) return std::unexpected(hp.error().wrap("[peers] listen"));
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | AI_PASSIVE;
  addrinfo* res = nullptr;
  std::string service = std::to_string(hp->second);
  const char* host = hp->first.empty() ? nullptr : hp->first.c_str();
  if (int rc = ::getaddrinfo(host, service.c_str(), &hints, &res); rc != 0) {
    return fail(fmt::format("[peers] listen {}: {}", address, gai_strerror(rc)));
  }
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> owned(res, freeaddrinfo);
  UniqueFd fd(::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return fail_errno("socket");
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd.get(), res->ai_addr, res->ai_addrlen) != 0) return fail_errno("bind " + address);
  if (::listen(fd.get(), 64) != 0) return fail_errno("listen " + address);
  sockaddr_storage bound{};
  socklen_t len = sizeof bound;
  ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&bound), &len);
  port_ = bound.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port)
                                      : ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  wake_fd_ = UniqueFd(::eventfd(0, EFD_CLOEXEC));
  if (!wake_fd_) return fail_errno("eventfd");
  listen_fd_ = std::move(fd);
  acceptor_ = std::thread([this] { accept_loop(); });
  return {};
}

void PeerServer::accept_loop() {
  for (;;) {
    pollfd fds[2] = {{listen_fd_.get(), POLLIN, 0}, {wake_fd_.get(), POLLIN, 0}};
    int n = ::poll(fds, 2, 1000);
    if (stopping_) return;
    {
      // Reap the connections that ended.
      std::lock_guard lock(mutex_);
      for (auto it = active_.begin(); it != active_.end();) {
        if (*it->done) {
          it->thread.join();
          it = active_.erase(it);
        } else {
          ++it;
        }
      }
    }
    if (n <= 0 || (fds[0].revents & POLLIN) == 0) continue;
    int c = ::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) continue;
    UniqueFd conn(c);
    std::lock_guard lock(mutex_);
    if (active_.size() >= kMaxPeerConnections) {
      if (log_) log_("peer connection refused: too many at once");
      continue;  // closed
    }
    auto done = std::make_shared<std::atomic<bool>>(false);
    Active& a = active_.emplace_back();
    a.fd = conn.get();
    a.done = done;
    a.thread = std::thread([this, done, fd = std::move(conn)]() mutable {
      serve(std::move(fd));
      *done = true;
    });
  }
}

void PeerServer::serve(UniqueFd fd) {
  // The connection works on a duplicate: `fd` stays open (so stop() may shut the socket
  // down by its number) until it is forgotten below.
  {
    UniqueFd dup(::fcntl(fd.get(), F_DUPFD_CLOEXEC, 0));
    Result<PeerConnection> conn = std::unexpected(errno_error("dup"));
    if (dup) conn = PeerConnection::accept(ctx_, std::move(dup), allowed_, timeout_);
    if (conn) {
      handler_(*conn);
    } else if (log_) {
      log_("peer connection refused: " + conn.error().message());
    }
  }
  std::lock_guard lock(mutex_);
  for (auto& a : active_) {
    if (a.fd == fd.get()) a.fd = -1;
  }
}

void PeerServer::stop() {
  if (stopping_.exchange(true)) return;
  if (wake_fd_) {
    uint64_t one = 1;
    (void)!::write(wake_fd_.get(), &one, sizeof one);
  }
  if (acceptor_.joinable()) acceptor_.join();
  std::list<Active> left;
  {
    std::lock_guard lock(mutex_);
    for (auto& a : active_) {
      if (a.fd >= 0) ::shutdown(a.fd, SHUT_RDWR);
    }
    left.swap(active_);
  }
  for (auto& a : left) {
    if (a.thread.joinable()) a.thread.join();
  }
  listen_fd_.reset();
}

}  // namespace arch
